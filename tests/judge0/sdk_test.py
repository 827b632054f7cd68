"""The official Judge0 Python SDK (judge0 0.0.8) against a running evald.

Run by scripts/judge0-sdk, which starts the server and passes its Judge0
base URLs: the /judge0 prefix of the main listener and the root of the
--judge0-listen listener. Exits non-zero on the first failed check.

    sdk_test.py BASE_URL [BASE_URL...]        the checks
    sdk_test.py --bench ROUNDS BASE_URL MAIN_URL  hello-world round trips
                                                 beside a baseline
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


def bench(base, main, rounds, per_round=5):
    """The SDK's hello-world round trip beside one `wait=true` request, a
    Piston request to the same server and bare `python3` on the host (the
    baseline), in alternating order each round."""
    import subprocess
    import httpx

    src = 'print("hello, world")'
    client = judge0.Client(base)
    http = httpx.Client(timeout=30)

    def sdk():
        r = judge0.run(client=client, source_code=src, language=judge0.PYTHON)
        return r.stdout

    def wait_true():
        r = http.post(f"{base}/submissions?wait=true", json={"source_code": src, "language_id": 71})
        return r.json().get("stdout")

    def piston():
        body = {"language": "python", "version": "*", "files": [{"content": src}]}
        return http.post(f"{main}/api/v2/execute", json=body).json()["run"]["stdout"]

    def bare():
        # The interpreter the boxes run (languages/python.toml), not whatever PATH finds.
        return subprocess.run(["/usr/bin/python3", "-c", src], capture_output=True, text=True, check=True).stdout

    sides = [("bare /usr/bin/python3 -c on the host (baseline)", bare), ("Judge0 SDK judge0.run (polls every 100 ms)", sdk),
             ("POST /judge0/submissions?wait=true", wait_true), ("Piston POST /api/v2/execute", piston)]
    for _, f in sides:  # warm: the SDK's /about and /languages, the interpreter's files
        f()
    times = {name: [] for name, _ in sides}
    ratios = {name: [] for name, _ in sides}
    for r in range(rounds):
        medians = {}
        for name, f in sides[r % len(sides):] + sides[:r % len(sides)]:
            got = []
            for _ in range(per_round):
                t = time.perf_counter()
                out = f()
                got.append((time.perf_counter() - t) * 1000)
                if out != "hello, world\n":
                    raise SystemExit(f"FAIL bench {name}: {out!r}")
            times[name] += got
            medians[name] = statistics.median(got)
        for name in medians:
            ratios[name].append(medians[name] / medians[sides[0][0]])
    print(f"{rounds} rounds of {per_round} runs per side, sides alternating; ratio = the median round's "
          "median over the baseline's in the same round")
    for name, _ in sides:
        report(name, times[name], statistics.median(ratios[name]))


def report(what, times, ratio):
    times = sorted(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{what}: median {statistics.median(times):.1f} ms, p99 {p99:.1f} ms, x{ratio:.1f} the baseline")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--bench"]:
        bench(args[2], args[3], int(args[1]))
    else:
        for base in args:
            checks(base)
        print("judge0 sdk: every check passed")
