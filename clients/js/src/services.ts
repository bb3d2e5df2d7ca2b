/** The JSON of the control plane's services API (`/api/v1/services`, see
 * src/liqi/control/api/services.py), and when a service has settled (pure). */

/** An EAS service JSON as users write it: `{name, model_path, processor, metadata, ...}`. */
export type ServiceSpec = Record<string, unknown>;

export interface ServiceInstance {
  id: string;
  version: number;
  /** STARTING, READY, DRAINING, STOPPING, CRASHED */
  state: string;
  url: string;
  restarts: number;
  reason: string;
  started_at: string | null;
  ready_at: string | null;
}

export interface ServiceEvent {
  at: string;
  level: string;
  message: string;
}

/** A service as `liqi eas desc` shows it. `instances` and `events` are filled by getService
 * and the change methods, empty in listServices; `token` only in createService's answer;
 * `warnings` (fields accepted but not used) only in createService's. */
export interface Service {
  name: string;
  project: string;
  /** CREATING, RUNNING, UPDATING, SCALING, STOPPING, STOPPED, FAILED or DELETING. */
  state: string;
  reason: string;
  current_version: number;
  latest_version: number;
  instances_wanted: number;
  instances_ready: number;
  /** The gateway: `<control plane>/api/predict/<name>`; PredictClient takes it as endpoint. */
  endpoint: string;
  /** Each ready instance's own `<url>/api/predict/<name>`. */
  direct_endpoints: string[];
  token_required: boolean;
  model_path: string | null;
  processor: string | null;
  cpu: number | null;
  memory_mb: number | null;
  autoscaler: Record<string, unknown> | null;
  created_by: string;
  created_at: string;
  updated_at: string;
  /** The current version's service JSON. */
  config: ServiceSpec;
  instances: ServiceInstance[];
  events: ServiceEvent[];
  warnings: string[];
  token: string | null;
}

export interface ServiceVersion {
  version: number;
  current: boolean;
  created_by: string;
  created_at: string;
  config: ServiceSpec;
}

export interface ServiceToken {
  service: string;
  token_required: boolean;
  token: string | null;
}

/** A piece of one instance's log: read on from `offset` until `final` (the instance ended). */
export interface ServiceLogChunk {
  instance: string;
  data: string;
  offset: number;
  final: boolean;
}

/** Nothing is in progress: RUNNING with every wanted instance ready on the current version
 * (and no other), STOPPED with no instance left, or FAILED with its reason. A change answers
 * before the reconciler acted on it, so the state alone is not enough. Needs getService's
 * answer (with instances). */
export function isSettled(service: Service): boolean {
  if (service.state === "RUNNING") {
    return (
      service.instances_ready === service.instances_wanted &&
      service.instances.every((i) => i.version === service.current_version && i.state === "READY")
    );
  }
  if (service.state === "STOPPED") return service.instances.length === 0;
  if (service.state === "FAILED") return service.reason !== "";
  return false;
}
