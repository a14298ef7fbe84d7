/** Share-nothing SMP: shards, cross-shard calls over shared-memory rings, Sharded<T>. */
export { smp, thisShard, submitTo, post, shutdownSignal, configureSmp, smpStats } from "./runtime.ts";
export type { SmpOptions, SmpStats } from "./runtime.ts";
export { registerHandler, hasHandler } from "./registry.ts";
export type { HandlerRef, AnyFunction } from "./registry.ts";
export { Sharded, sharded, registerReducer } from "./sharded.ts";
export type { MethodKeys, MethodArgs, MethodResult, Remote, Reducer, ShardedOptions, ServiceClass } from "./sharded.ts";
export {
  EncodeError,
  MessageTooLargeError,
  UnknownHandlerError,
  UnknownMethodError,
  ShardRangeError,
  ShardGoneError,
  SmpNotRunningError,
  RegistrationError,
  ServiceStoppedError,
  ServiceNotStartedError,
  ServiceStateError,
  RemoteError,
} from "./errors.ts";
export { threadCpuAffinity, parseCpuset, formatCpuset } from "./affinity.ts";
export { connectPort, onPort } from "./ports.ts";
export { registerErrorClass } from "./codec.ts";
