// Service instances a control plane started: `liqi serve` processes in sessions of their own,
// which outlive the plane. The tests delete their services; this is the last resort, as
// tests/support/servers.py kill_instances is for pytest.
import { readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";

/** SIGKILL every process working under `home/services` (an instance runs in its folder
 * there, also one a standby server became); returns how many. Linux: reads /proc. */
export function killInstances(home) {
  const prefix = `${join(home, "services")}/`;
  let killed = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cwd;
    try {
      cwd = readlinkSync(`/proc/${entry}/cwd`);
    } catch {
      continue; // gone, or not ours
    }
    if (!cwd.startsWith(prefix)) continue;
    try {
      process.kill(Number(entry), "SIGKILL");
      killed++;
    } catch {
      // gone meanwhile
    }
  }
  return killed;
}
