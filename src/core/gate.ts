/**
 * A gate (seastar/core/gate.hh): counts the fibers running inside a service so that stopping
 * it can refuse new work and then wait for the work in flight to drain.
 */
import { InvalidArgumentError, listShoalErrorClass, ShoalError } from "./errors.ts";
import { abortError, abortable, checkFunction, checkOptions, type Awaitable, type SignalOptions } from "./future.ts";

/** Entering a closed gate (code ERR_GATE_CLOSED). */
export class GateClosedError extends ShoalError {
  constructor(message = "gate closed") {
    super("ERR_GATE_CLOSED", message);
  }
}
listShoalErrorClass(GateClosedError);

/**
 * Counts holders; close() stops new entries and resolves once the last holder has left.
 * Every operation is O(1). Implements Symbol.asyncDispose: `await using gate = new Gate()`
 * closes it and waits for the holders at scope exit.
 */
export class Gate implements AsyncDisposable {
  private holders = 0;
  private closing: Promise<void> | undefined;
  private drained: (() => void) | undefined;
  private readonly name: string | undefined;

  /**
   * `name`, if given, prefixes the GateClosedError message ("<name> gate closed").
   * Throws InvalidArgumentError if `name` is given and not a string.
   */
  constructor(name?: string) {
    if (name !== undefined && typeof name !== "string") {
      throw new InvalidArgumentError("name must be a string");
    }
    this.name = name;
  }

  /** Number of holders inside. */
  get count(): number {
    return this.holders;
  }

  /** True once close() was called (the holders may still be draining). */
  get isClosed(): boolean {
    return this.closing !== undefined;
  }

  /** Enters the gate. Throws GateClosedError if it is closed. */
  enter(): void {
    if (this.closing) throw this.closedError();
    this.holders++;
  }

  /** Enters the gate if it is open; returns whether it did. */
  tryEnter(): boolean {
    if (this.closing) return false;
    this.holders++;
    return true;
  }

  /**
   * Leaves the gate; the last one out after close() resolves close()'s promise.
   * Throws ShoalError (code ERR_GATE_NOT_ENTERED) if nobody is inside: a leave() without its
   * enter() is a bug that would otherwise let close() resolve while work is still running.
   */
  leave(): void {
    if (this.holders === 0) {
      throw new ShoalError("ERR_GATE_NOT_ENTERED", "gate.leave() without a matching enter()");
    }
    if (--this.holders === 0 && this.drained) {
      const drained = this.drained;
      this.drained = undefined;
      drained();
    }
  }

  /** Throws GateClosedError if the gate is closed: a cheap check for long loops inside the gate. */
  check(): void {
    if (this.closing) throw this.closedError();
  }

  /** Enters and returns a holder that leaves on release() or dispose: `using h = gate.hold()`. Throws GateClosedError if closed. */
  hold(): GateHolder {
    this.enter();
    return new GateHolder(this);
  }

  /** Like hold(), but returns undefined instead of throwing when the gate is closed. */
  tryHold(): GateHolder | undefined {
    return this.tryEnter() ? new GateHolder(this) : undefined;
  }

  /**
   * Closes the gate to new entries and resolves once every holder has left (at once if none
   * is inside). Rejects only with AbortError when `opts.signal` aborts first: the gate stays
   * closed and the holders inside are not interrupted (hand them the signal too). A signal
   * aborted before the call rejects at once and leaves the gate open.
   * Throws GateClosedError if the gate was already closed: two owners racing to stop a service
   * is a bug to surface, not to paper over.
   */
  close(opts?: SignalOptions): Promise<void> {
    checkOptions(opts, "opts", false);
    if (this.closing) throw new GateClosedError(`${this.label()}gate is already closed; close() may be called once`);
    const signal = opts?.signal;
    // Already aborted: nothing happens (the gate stays open), as for every other wait.
    if (signal?.aborted) return Promise.reject(abortError(signal, "gate close"));
    return abortable(this.closeDrained(), signal, "gate close");
  }

  private closeDrained(): Promise<void> {
    if (this.holders === 0) {
      this.closing = Promise.resolve();
    } else {
      this.closing = new Promise<void>((resolve) => {
        this.drained = resolve;
      });
    }
    return this.closing;
  }

  /** Closes the gate if still open and waits for the holders to leave. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.closing ?? this.close();
  }

  private label(): string {
    return this.name === undefined ? "" : `${this.name} `;
  }

  private closedError(): GateClosedError {
    return new GateClosedError(`${this.label()}gate closed`);
  }
}

/** A pass through a Gate; leaves it exactly once, on release() or dispose. */
export class GateHolder implements Disposable {
  private gate: Gate | undefined;

  /** @internal Built by Gate.hold() after entering. */
  constructor(gate: Gate) {
    this.gate = gate;
  }

  /** True until released. */
  get held(): boolean {
    return this.gate !== undefined;
  }

  /** Leaves the gate; later calls do nothing. */
  release(): void {
    const gate = this.gate;
    if (!gate) return;
    this.gate = undefined;
    gate.leave();
  }

  /** Leaves the gate (the `using` exit). */
  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * Runs `fn` inside `gate` and leaves when it settles, on success or failure (Seastar's
 * with_gate). Rejects with GateClosedError (fn is not called) if the gate is closed, or with
 * fn's error. Cost: one await.
 * Throws InvalidArgumentError (synchronously) for a non-Gate `gate` or non-function `fn`.
 */
export function withGate<T>(gate: Gate, fn: () => Awaitable<T>): Promise<T> {
  if (!(gate instanceof Gate)) throw new InvalidArgumentError("gate must be a Gate");
  checkFunction(fn, "fn");
  try {
    gate.enter();
  } catch (err) {
    return Promise.reject(err);
  }
  return runInside(gate, fn);
}

async function runInside<T>(gate: Gate, fn: () => Awaitable<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    gate.leave();
  }
}
