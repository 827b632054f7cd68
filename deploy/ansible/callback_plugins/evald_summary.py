# A summary of a run kept on the control machine: per host, every task with
# its start, duration and result, and the host's total; written when the
# playbook ends to $EVALD_ROLLOUT_SUMMARY or runs/rollout-<UTC time>.md next
# to the playbook. Ansible's own output is unchanged (this is a notification
# callback).
from __future__ import annotations

import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: evald_summary
type: notification
short_description: per-host step timings of an evald rollout, kept in a file
description:
  - Writes a Markdown summary of the run with per-host task timings.
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "evald_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.started = time.time()
        self.playbook = ""
        self.task_start = {}
        # host -> list of (task name, start, seconds, result)
        self.rows = {}

    def v2_playbook_on_start(self, playbook):
        self.playbook = playbook._file_name

    def v2_runner_on_start(self, host, task):
        self.task_start[(host.get_name(), task._uuid)] = time.time()

    def _record(self, result, outcome):
        host = result._host.get_name()
        task = result._task
        start = self.task_start.pop((host, task._uuid), time.time())
        self.rows.setdefault(host, []).append((task.get_name(), start, time.time() - start, outcome))

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed (ignored)" if ignore_errors else "FAILED")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "UNREACHABLE")

    def v2_playbook_on_stats(self, stats):
        when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.started))
        path = os.environ.get("EVALD_ROLLOUT_SUMMARY") or os.path.join(
            os.path.dirname(os.path.abspath(self.playbook or ".")), "runs", f"rollout-{when}.md"
        )
        lines = [f"# {os.path.basename(self.playbook)} at {when}", ""]
        lines.append("| host | ok | changed | failed | unreachable | seconds |")
        lines.append("|---|---|---|---|---|---|")
        for host in sorted(stats.processed):
            s = stats.summarize(host)
            total = sum(r[2] for r in self.rows.get(host, []))
            lines.append(
                f"| {host} | {s['ok']} | {s['changed']} | {s['failures']} | {s['unreachable']} | {total:.1f} |"
            )
        for host in sorted(self.rows):
            lines += ["", f"## {host}", "", "| step | started (s) | seconds | result |", "|---|---|---|---|"]
            for name, start, took, outcome in self.rows[host]:
                lines.append(f"| {name} | {start - self.started:.1f} | {took:.1f} | {outcome} |")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self._display.display(f"evald rollout summary: {path}")
