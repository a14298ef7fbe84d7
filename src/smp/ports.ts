/**
 * MessagePorts between two shards, relayed once through the supervisor. Shoal's own traffic
 * never uses them; they exist for code that must use postMessage (and for the benchmark that
 * compares the rings with it).
 */
import { InvalidArgumentError } from "../core/errors.ts";
import { postToSupervisor } from "./control.ts";
import { checkShard, role, thisShard } from "./runtime.ts";

type PortHandler = (port: MessagePort, from: number) => void;

const handlers = new Map<string, PortHandler>();
const early = new Map<string, { port: MessagePort; from: number }[]>();

/**
 * Opens a MessageChannel to `shard`: returns this side's port now; the other side is handed
 * to the handler registered there with onPort(tag). Costs two postMessage hops, once.
 * Throws ShardRangeError, or InvalidArgumentError outside a shard or for a bad tag.
 */
export function connectPort(shard: number, tag: string): MessagePort {
  checkShard(shard, "connectPort");
  if (typeof tag !== "string" || tag === "") throw new InvalidArgumentError("connectPort: tag must be a non-empty string");
  if (role() !== "shard") throw new InvalidArgumentError("connectPort: only shards started by app() can open ports");
  if (shard === thisShard()) throw new InvalidArgumentError("connectPort: a port to the calling shard itself is pointless");
  const channel = new MessageChannel();
  postToSupervisor({ type: "port", to: shard, tag, port: channel.port2 }, [channel.port2]);
  return channel.port1;
}

/** Receives the ports other shards open with connectPort(thisShard(), tag). Ports that came earlier are delivered now. */
export function onPort(tag: string, handler: PortHandler): void {
  if (typeof handler !== "function") throw new InvalidArgumentError("onPort: handler must be a function");
  handlers.set(tag, handler);
  const waiting = early.get(tag);
  if (waiting) {
    early.delete(tag);
    for (const w of waiting) handler(w.port, w.from);
  }
}

/** @internal The shard entry delivers a relayed port here. */
export function deliverPort(tag: string, from: number, port: MessagePort): void {
  const h = handlers.get(tag);
  if (h) h(port, from);
  else early.set(tag, [...(early.get(tag) ?? []), { port, from }]);
}
