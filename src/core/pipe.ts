/**
 * A one-way channel between two fibers (seastar/core/pipe.hh): a bounded Queue with a reader
 * end and a writer end. Closing the writer is end-of-file for the reader once the queued items
 * are drained; closing the reader breaks the pipe for the writer.
 */
import { ClosedError, InvalidArgumentError, listShoalErrorClass, ShoalError } from "./errors.ts";
import { abortError, checkInteger, checkOptions, type SignalOptions } from "./future.ts";
import { Queue } from "./queue.ts";

/** Writing to a pipe whose reader is gone (code ERR_BROKEN_PIPE). */
export class BrokenPipeError extends ShoalError {
  constructor(message = "broken pipe: the reader is closed") {
    super("ERR_BROKEN_PIPE", message);
  }
}
listShoalErrorClass(BrokenPipeError);

// Queued by writer.close() to wake readers blocked on an empty queue.
const EOF: unique symbol = Symbol("pipe EOF");
type Slot<T> = T | typeof EOF;

const EOF_PROMISE: Promise<undefined> = Promise.resolve(undefined);

class PipeState<T> {
  readonly queue: Queue<Slot<T>>;
  readOpen = true;
  writeOpen = true;
  constructor(size: number) {
    this.queue = new Queue<Slot<T>>(size);
  }
}

/**
 * A pipe carrying items of type T through a buffer of `size` items. `undefined` is the
 * end-of-file mark, so it cannot be an item. Destructure it: `const { reader, writer } = new Pipe<Buf>(4)`.
 */
export class Pipe<T extends {} | null> {
  /** The consuming end. */
  readonly reader: PipeReader<T>;
  /** The producing end. */
  readonly writer: PipeWriter<T>;

  /** Throws InvalidArgumentError if `size` is neither an integer >= 1 nor Infinity. */
  constructor(size: number) {
    if (size !== Infinity) checkInteger(size, "size", 1);
    const state = new PipeState<T>(size);
    this.reader = new PipeReader(state);
    this.writer = new PipeWriter(state);
  }
}

/**
 * The reading end of a Pipe. Reads are served in FIFO order. Implements Symbol.dispose
 * (closes) and Symbol.asyncIterator (`for await (const item of reader)` until EOF).
 */
export class PipeReader<T extends {} | null> implements Disposable, AsyncIterable<T> {
  private readonly state: PipeState<T>;
  private hasUnread = false;
  private unreadItem: T | undefined = undefined;

  /** @internal Built by Pipe. */
  constructor(state: PipeState<T>) {
    this.state = state;
  }

  /** True until close() or abort(). */
  get isOpen(): boolean {
    return this.state.readOpen;
  }

  /**
   * Resolves with the next item, or undefined at end of file: the writer closed and every
   * item written before was read. A closed reader reads EOF. Rejects with the writer's abort
   * error if it aborted, or with AbortError if `opts.signal` is or becomes aborted.
   * Cost: one settled promise when an item is ready; a queue waiter otherwise.
   * Throws InvalidArgumentError (synchronously) for malformed options.
   */
  read(opts?: SignalOptions): Promise<T | undefined> {
    checkOptions(opts, "opts", false);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, "pipe read"));
    if (this.hasUnread) {
      const item = this.unreadItem as T;
      this.hasUnread = false;
      this.unreadItem = undefined;
      return Promise.resolve(item);
    }
    const { queue, readOpen, writeOpen } = this.state;
    if (!readOpen) return EOF_PROMISE;
    if (queue.isAborted) return queue.popEventually(opts) as Promise<never>;
    if (queue.size > 0) {
      const slot = queue.pop();
      return slot === EOF ? EOF_PROMISE : Promise.resolve(slot);
    }
    if (!writeOpen) return EOF_PROMISE;
    return queue.popEventually(opts).then(fromSlot);
  }

  /**
   * Pushes `item` back so that the next read() returns it (Seastar's unread; one item deep).
   * Throws InvalidArgumentError for an undefined item, and ShoalError (code ERR_UNREAD_OVERFLOW)
   * if an unread item is already pending.
   */
  unread(item: T): void {
    if (item === undefined) throw new InvalidArgumentError("item must not be undefined (the EOF mark)");
    if (this.hasUnread) throw new ShoalError("ERR_UNREAD_OVERFLOW", "pipe reader already holds an unread item");
    this.hasUnread = true;
    this.unreadItem = item;
  }

  /**
   * Closes the reading end: queued items are dropped, pending reads resolve EOF, and the
   * writer's pending and later writes reject with BrokenPipeError. Idempotent.
   */
  close(): void {
    this.abort(new BrokenPipeError());
  }

  /** Like close(), but the writer's writes reject with `err`. Idempotent: only the first close or abort counts. */
  abort(err: unknown = new BrokenPipeError()): void {
    const state = this.state;
    if (!state.readOpen) return;
    state.readOpen = false;
    this.hasUnread = false;
    this.unreadItem = undefined;
    const queue = state.queue;
    if (queue.isAborted) return;
    // Blocked reads wait on an empty queue; each EOF goes straight to one of them.
    while (queue.blockedConsumers > 0 && queue.push(EOF)) {}
    queue.abort(err);
  }

  /** Closes the reader (the `using` exit). */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Yields items until EOF; rejects like read(). Breaking out of the loop closes the reader. */
  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    try {
      for (;;) {
        const item = await this.read();
        if (item === undefined) return;
        yield item;
      }
    } finally {
      this.close();
    }
  }
}

function fromSlot<T>(slot: Slot<T>): T | undefined {
  return slot === EOF ? undefined : slot;
}

/** The writing end of a Pipe. Implements Symbol.dispose (closes). */
export class PipeWriter<T extends {} | null> implements Disposable {
  private readonly state: PipeState<T>;

  /** @internal Built by Pipe. */
  constructor(state: PipeState<T>) {
    this.state = state;
  }

  /** True until close() or abort(). */
  get isOpen(): boolean {
    return this.state.writeOpen;
  }

  /**
   * Queues `item`, waiting (FIFO among writers) while the buffer is full.
   * Rejects with BrokenPipeError (or the reader's abort error) once the reader is closed, with
   * ClosedError (code ERR_PIPE_CLOSED) after this writer's own close(), or with AbortError if
   * `opts.signal` is or becomes aborted (the item is then not written).
   * Cost: no allocation when there is room; a queue waiter otherwise.
   * Throws InvalidArgumentError (synchronously) for an undefined item or malformed options.
   */
  write(item: T, opts?: SignalOptions): Promise<void> {
    if (item === undefined) throw new InvalidArgumentError("item must not be undefined (the EOF mark)");
    checkOptions(opts, "opts", false);
    if (!this.state.writeOpen) return Promise.reject(new ClosedError("pipe writer is closed", "ERR_PIPE_CLOSED"));
    return this.state.queue.pushEventually(item, opts);
  }

  /**
   * Ends the stream: the reader gets the items already written (including writes still
   * waiting for room), then EOF. Idempotent.
   */
  close(): void {
    const state = this.state;
    if (!state.writeOpen) return;
    state.writeOpen = false;
    const queue = state.queue;
    if (queue.isAborted) return;
    // Readers block only on an empty queue; each EOF wakes one of them.
    while (queue.blockedConsumers > 0 && queue.push(EOF)) {}
  }

  /**
   * Ends the stream abnormally: queued items are dropped and the reader's pending and later
   * reads reject with `err` (default: a ShoalError with code ERR_PIPE_ABORTED). Idempotent.
   */
  abort(err: unknown = new ShoalError("ERR_PIPE_ABORTED", "pipe writer aborted")): void {
    const state = this.state;
    if (!state.writeOpen) return;
    state.writeOpen = false;
    if (!state.queue.isAborted) state.queue.abort(err);
  }

  /** Closes the writer (the `using` exit). */
  [Symbol.dispose](): void {
    this.close();
  }
}
