#!/usr/bin/env python3
"""The systemd guest tier (scripts/vm-test systemd), run as root inside the
guest: the package installs and its service behaves under systemd.

Each check prints `ok - <what> (<seconds> s)` or raises, which fails the tier.
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

DEB = sys.argv[1]
URL = "http://127.0.0.1:8080"
UNIT = "evald.service"
UID_BASE, SLOTS = 61000, 8


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"FAIL - `{cmd}` exited {r.returncode}: {r.stdout}{r.stderr}")
    return r


def prop(name):
    return sh(f"systemctl show -P {name} {UNIT}").stdout.strip()


def check(ok, what):
    if not ok:
        raise SystemExit(f"FAIL - {what}")


def done(what, started):
    print(f"ok - {what} ({time.monotonic() - started:.1f} s)", flush=True)


def execute(code, memory=None, timeout=60, run_timeout=None):
    body = {"language": "python", "version": "*", "files": [{"name": "main.py", "content": code}]}
    if memory:
        body["run_memory_limit"] = memory
    if run_timeout:
        body["run_timeout"] = run_timeout
    req = urllib.request.Request(URL + "/api/v2/execute", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def ready():
    try:
        with urllib.request.urlopen(URL + "/healthz/ready", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def box_processes():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = next(int(l.split()[1]) for l in f if l.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if UID_BASE <= uid <= UID_BASE + SLOTS:
            found.append(pid)
    return found


def service_cgroups():
    path = "/sys/fs/cgroup/system.slice/evald.service"
    return [d for d, _, _ in os.walk(path)] if os.path.isdir(path) else []


def evald_mounts():
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if "/run/evald" in l]


# --- systemd-analyze verify, install --------------------------------------
t = time.monotonic()
# Installing with a policy-rc.d that forbids starting: the package must not
# start the service (a deploy tool restarts when it chooses).
with open("/usr/sbin/policy-rc.d", "w") as f:
    f.write("#!/bin/sh\nexit 101\n")
os.chmod("/usr/sbin/policy-rc.d", 0o755)
sh(f"dpkg -i {DEB}")
check(prop("ActiveState") == "inactive", "policy-rc.d honoured: installed but not started")
check(prop("UnitFileState") == "enabled", "the unit is enabled")
os.remove("/usr/sbin/policy-rc.d")
for path in ["/usr/bin/evald", "/usr/share/evald/languages/python.toml", "/etc/evald/evald.env",
             "/usr/share/man/man1/evald.1.gz", "/usr/share/doc/evald/copyright", "/var/lib/evald"]:
    check(os.path.exists(path), f"the package installed {path}")
check(oct(os.stat("/var/lib/evald").st_mode & 0o777) == "0o700", "the data directory is root-only")
verify = sh(f"systemd-analyze verify {UNIT}", check=False)
check(verify.returncode == 0 and verify.stdout.strip() == "" and verify.stderr.strip() == "",
      f"systemd-analyze verify is clean: {verify.stdout}{verify.stderr}")
done("package installs (policy-rc.d honoured), systemd-analyze verify clean", t)

# --- start reaches ready through notify -------------------------------------
t = time.monotonic()
sh(f"systemctl start {UNIT}")
# Type=notify: `systemctl start` returned only after READY=1, so the node
# answers at once, without polling.
check(ready(), "ready as soon as systemctl start returned")
check(prop("Type") == "notify" and prop("SubState") == "running", "a running notify service")
check(prop("StatusText") == "serving", f"status text from sd_notify: {prop('StatusText')!r}")
main_pid = prop("MainPID")
cg = open(f"/proc/{main_pid}/cgroup").read().strip()
check(cg == "0::/system.slice/evald.service/evald-default-service", f"evald moved itself into its leaf: {cg}")
children = sorted(os.listdir("/sys/fs/cgroup/system.slice/evald.service"))
check("evald-default" in children and "evald-default-service" in children, f"box parent beside the leaf: {children}")
done("systemctl start reaches ready through notify; leaf cgroup", t)

# --- code runs; an OOM bomb leaves the service running --------------------
t = time.monotonic()
r = execute("print(6 * 7)\n")
check(r["run"]["stdout"] == "42\n" and r["run"]["code"] == 0, f"code runs: {r}")
r = execute("b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n", memory=64 << 20, run_timeout=30000)
check(r["run"]["status"] == "SG" and r["run"]["message"] == "Memory limit exceeded", f"OOM bomb verdict: {r}")
check(prop("ActiveState") == "active" and prop("MainPID") == main_pid and prop("NRestarts") == "0",
      "the service survived the OOM bomb")
r = execute("print('after')\n")
check(r["run"]["stdout"] == "after\n", f"code runs after the bomb: {r}")
done("code runs; an OOM bomb in a box leaves the service running", t)

# --- stop during a long run drains ------------------------------------------
t = time.monotonic()
result = {}


def long_run():
    try:
        result["answer"] = execute("import time\ntime.sleep(6)\nprint('drained')\n", timeout=120, run_timeout=30000)
    except Exception as e:  # noqa: BLE001 - reported below
        result["error"] = repr(e)


client = threading.Thread(target=long_run)
client.start()
deadline = time.monotonic() + 60
while not box_processes():
    check(time.monotonic() < deadline, "the long run started")
    time.sleep(0.05)
stop_started = time.monotonic()
sh(f"systemctl stop {UNIT}")
stop_took = time.monotonic() - stop_started
client.join(120)
check(result.get("answer", {}).get("run", {}).get("stdout") == "drained\n", f"the run finished during the drain: {result}")
check(stop_took < 45, f"stopped within TimeoutStopSec (45 s): {stop_took:.1f} s")
check(prop("ActiveState") == "inactive" and prop("Result") == "success", f"clean stop: {prop('Result')}")
check(box_processes() == [], f"no box process left: {box_processes()}")
check(service_cgroups() == [], f"no cgroup left: {service_cgroups()}")
check(evald_mounts() == [], f"no mount left: {evald_mounts()}")
done(f"stop during a long run drains in {stop_took:.1f} s, leaves no process, cgroup or mount", t)

# --- restart under load loses no acknowledged request ----------------------
t = time.monotonic()
sh(f"systemctl start {UNIT}")
CLIENTS, PER_CLIENT = 3, 12
answers, errors = [], []


def client_load(c):
    for i in range(PER_CLIENT):
        want = f"{c}-{i}\n"
        for attempt in range(200):
            try:
                r = execute(f"print('{c}-{i}')\n", timeout=60)
            except (urllib.error.URLError, OSError) as e:
                # Connection refused or reset, or 503 while draining: retry
                # after a short backoff, as a client would.
                time.sleep(min(0.1 * (attempt + 1), 1.0))
                continue
            if r["run"]["stdout"] != want:
                errors.append(f"{want!r} answered {r}")
            answers.append(want)
            break
        else:
            errors.append(f"{want!r} never acknowledged")


threads = [threading.Thread(target=client_load, args=(c,)) for c in range(CLIENTS)]
for th in threads:
    th.start()
while len(answers) < 6:
    time.sleep(0.05)
sh(f"systemctl restart {UNIT}")
for th in threads:
    th.join(600)
check(errors == [], f"every request acknowledged with its own output: {errors}")
check(len(answers) == CLIENTS * PER_CLIENT, f"{len(answers)} of {CLIENTS * PER_CLIENT} acknowledged")
check(prop("ActiveState") == "active" and prop("NRestarts") == "0", "restarted by the operator, not by failure")
done(f"restart under load: {len(answers)} requests, none lost", t)

# --- purge removes what the package made -----------------------------------
t = time.monotonic()
sh("dpkg --purge evald")
for path in ["/usr/bin/evald", "/etc/evald", "/var/lib/evald", "/usr/share/evald", "/run/evald",
             "/run/evald-instances", "/usr/lib/systemd/system/evald.service"]:
    check(not os.path.exists(path), f"purge removed {path}")
check(box_processes() == [] and service_cgroups() == [], "nothing of the service left after purge")
done("purge removes what the package created", t)
