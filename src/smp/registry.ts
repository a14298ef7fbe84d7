/**
 * Names that cross shards. Functions cannot cross Workers, so every shard imports the
 * application module, which registers its handlers and services at top level; a message
 * carries the registration's index, which is the same on every shard because every shard
 * runs the same registrations in the same order. The supervisor checks this at start
 * (each shard reports its registry's signature) and registration is closed once a shard runs.
 */
import { InvalidArgumentError } from "../core/errors.ts";
import { RegistrationError } from "./errors.ts";

/** Any function a handler or a service method can be. */
export type AnyFunction = (...args: any[]) => unknown;

/**
 * A registered handler: pass it (or its name) to submitTo/post. `F` types the arguments and
 * the result at the call site.
 */
export interface HandlerRef<F extends AnyFunction = AnyFunction> {
  /** The registered name. */
  readonly name: string;
  /** @internal index in the registry, the same on every shard */
  readonly id: number;
  /** @internal carries F for type inference only; never set */
  readonly __type?: F | undefined;
}

/** What the runtime needs from a Sharded service (see sharded.ts). */
export interface ServiceHost {
  readonly id: number;
  readonly name: string;
  /** Method name by method id (ids are the same on every shard). */
  methodName(id: number): string | undefined;
  /** Throws what invokeLocal would throw before it calls `name` (not running, no such method). */
  checkInvocable(name: string): void;
  /** Runs method `name` on this shard's instance; throws or rejects like the method. */
  invokeLocal(name: string, args: unknown[]): unknown;
}

interface HandlerEntry {
  readonly ref: HandlerRef;
  readonly fn: AnyFunction;
}

const handlers: HandlerEntry[] = [];
const handlerIds = new Map<string, number>();
const services: ServiceHost[] = [];
const serviceIds = new Map<string, number>();
let sealedBecause: string | undefined;

function checkName(kind: string, name: unknown): asserts name is string {
  if (typeof name !== "string" || name.length === 0 || name.length > 200) {
    throw new InvalidArgumentError(`${kind} name must be a non-empty string of at most 200 characters, got ${String(name)}`);
  }
}

function checkOpen(kind: string, name: string): void {
  if (sealedBecause !== undefined) {
    throw new RegistrationError(
      `${kind} "${name}" registered after ${sealedBecause}; register handlers and services at the top level ` +
        "of the application module, so that every shard registers the same ones in the same order",
    );
  }
}

/**
 * Registers `fn` under `name` so that any shard can run it with submitTo/post. Call at the top
 * level of the application module (it runs on every shard). Costs one Map insert.
 * Throws RegistrationError for a duplicate name or a registration after the shard started,
 * InvalidArgumentError for a bad name or a non-function.
 */
export function registerHandler<F extends AnyFunction>(name: string, fn: F): HandlerRef<F> {
  checkName("handler", name);
  if (typeof fn !== "function") throw new InvalidArgumentError(`registerHandler("${name}"): fn must be a function`);
  checkOpen("handler", name);
  if (handlerIds.has(name)) throw new RegistrationError(`handler "${name}" is already registered`);
  const ref: HandlerRef<F> = Object.freeze({ name, id: handlers.length });
  handlerIds.set(name, ref.id);
  handlers.push({ ref, fn });
  return ref;
}

/** @internal Registers a Sharded service; same rules as registerHandler. */
export function registerService(name: string, make: (id: number) => ServiceHost): ServiceHost {
  checkName("service", name);
  checkOpen("service", name);
  if (serviceIds.has(name)) {
    throw new RegistrationError(`a service named "${name}" is already registered; pass { name } to sharded() to tell them apart`);
  }
  const host = make(services.length);
  serviceIds.set(name, host.id);
  services.push(host);
  return host;
}

/** @internal The handler with this id, or undefined. */
export function handlerById(id: number): HandlerEntry | undefined {
  return handlers[id];
}

/** @internal The handler id for a name or a ref, or -1. */
export function handlerId(handler: string | HandlerRef): number {
  if (typeof handler === "string") return handlerIds.get(handler) ?? -1;
  if (handler !== null && typeof handler === "object" && handlers[handler.id]?.ref === handler) return handler.id;
  return -1;
}

/** @internal The service with this id, or undefined. */
export function serviceById(id: number): ServiceHost | undefined {
  return services[id];
}

/** @internal All registered services, in registration order. */
export function allServices(): readonly ServiceHost[] {
  return services;
}

/** True when a handler is registered under `name`. */
export function hasHandler(name: string): boolean {
  return handlerIds.has(name);
}

/**
 * @internal Closes registration (the shard runs now) and returns a signature of everything
 * registered, which must be the same on every shard.
 */
export function sealRegistry(reason: string): string {
  sealedBecause ??= reason;
  return registrySignature();
}

/** @internal The registry's signature: handler and service names in registration order. */
export function registrySignature(): string {
  return `handlers:${handlers.map((h) => h.ref.name).join(",")};services:${services.map((s) => s.name).join(",")}`;
}
