"""The official Judge0 Python SDK (judge0 0.0.8) against a running evald.

Run by scripts/judge0-sdk, which starts the server and passes its Judge0
base URLs: the /judge0 prefix of the main listener and the root of the
--judge0-listen listener. Exits non-zero on the first failed check.

    sdk_test.py BASE_URL [BASE_URL...]        the checks
    sdk_test.py --bench N BASE_URL             hello-world round trips
"""
import statistics
import sys
import time

import judge0

HELLO = {
    judge0.PYTHON: 'print(f"hello, {input()}")',
    judge0.C: '#include <stdio.h>\nint main(void) { char s[64]; scanf("%63s", s); printf("hello, %s\\n", s); return 0; }',
    judge0.CPP: '#include <iostream>\n#include <string>\nint main() { std::string s; std::cin >> s; std::cout << "hello, " << s << std::endl; }',
    judge0.JAVA: 'import java.util.Scanner;\npublic class Main { public static void main(String[] a) { System.out.println("hello, " + new Scanner(System.in).next()); } }',
    judge0.JAVASCRIPT: 'const s = require("fs").readFileSync(0, "utf8").trim(); console.log(`hello, ${s}`);',
}


def check(what, got, want):
    if got != want:
        raise SystemExit(f"FAIL {what}: got {got!r}, want {want!r}")
    print(f"ok   {what}")


def checks(base):
    client = judge0.Client(base)  # GET /languages and /config_info
    for alias, source in HELLO.items():
        r = judge0.run(client=client, source_code=source, stdin="Alice", language=alias)
        check(f"{base} {alias.name} hello", (r.status, r.stdout), (judge0.Status.ACCEPTED, "hello, Alice\n"))
        if not isinstance(r.time, float) or not isinstance(r.memory, int):
            raise SystemExit(f"FAIL {alias.name}: time {r.time!r} memory {r.memory!r}")
    cases = [("Bob", "hello, Bob"), ("Eve", "hello, Eve"), ("Mallory", "hello, Trent")]
    rs = judge0.run(client=client, source_code=HELLO[judge0.PYTHON], language=judge0.PYTHON, test_cases=cases)
    check(f"{base} test-case batch", [x.status for x in rs],
          [judge0.Status.ACCEPTED, judge0.Status.ACCEPTED, judge0.Status.WRONG_ANSWER])
    r = judge0.run(client=client, source_code="int main(void) { return undefined; }", language=judge0.C)
    check(f"{base} compile error", r.status, judge0.Status.COMPILATION_ERROR)
    if "undefined" not in (r.compile_output or ""):
        raise SystemExit(f"FAIL compile output: {r.compile_output!r}")
    r = judge0.run(client=client, source_code="while True: pass", language=judge0.PYTHON, cpu_time_limit=1)
    check(f"{base} time limit", r.status, judge0.Status.TIME_LIMIT_EXCEEDED)
    r = judge0.run(client=client, source_code="print(41)", language=judge0.PYTHON, expected_output="42")
    check(f"{base} wrong answer", r.status, judge0.Status.WRONG_ANSWER)
    r = judge0.run(client=client, source_code="print(42)", language=71, expected_output="42")
    check(f"{base} explicit id 71", r.status, judge0.Status.ACCEPTED)


def bench(base, n):
    client = judge0.Client(base)
    judge0.run(client=client, source_code='print("hello, world")', language=judge0.PYTHON)  # warm /about
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = judge0.run(client=client, source_code='print("hello, world")', language=judge0.PYTHON)
        times.append((time.perf_counter() - t) * 1000)
        check_quiet = r.stdout == "hello, world\n"
        if not check_quiet:
            raise SystemExit(f"FAIL bench: {r.stdout!r}")
    report(f"judge0 sdk python hello-world round trip (the SDK polls every 100 ms) over {n} runs", times)
    # The same run in one request (wait=true), for comparison.
    import httpx
    body = {"source_code": 'print("hello, world")', "language_id": 71}
    with httpx.Client(base_url=base) as http:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            r = http.post("/submissions?wait=true", json=body)
            times.append((time.perf_counter() - t) * 1000)
            if r.status_code != 201 or r.json().get("stdout") != "hello, world\n":
                raise SystemExit(f"FAIL bench wait=true: {r.status_code} {r.text}")
    report(f"POST /submissions?wait=true python hello-world over {n} runs", times)


def report(what, times):
    times = sorted(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{what}: median {statistics.median(times):.1f} ms, p99 {p99:.1f} ms, "
          f"min {times[0]:.1f} ms, max {times[-1]:.1f} ms")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--bench"]:
        bench(args[2], int(args[1]))
    else:
        for base in args:
            checks(base)
        print("judge0 sdk: every check passed")
