/**
 * memcached's notion of time. Items store times as seconds relative to `processStarted`
 * ("rel_time"), which stock memcached sets to 62 seconds before it really started so that a
 * relative time is never 0 (0 means "never expires"). `realtime()` converts a client's exptime:
 * 0 never, up to 30 days relative, beyond that an absolute Unix time.
 *
 * The clock only moves when `tick()` reads the wall clock (the server does that once per batch
 * of requests), or, in tests, when `ManualClock.advance()` says so.
 */

/** Largest exptime treated as relative: 30 days, in seconds. */
export const REALTIME_MAXDELTA = 60 * 60 * 24 * 30;

/** Stock memcached bumps an item in the LRU at most once per this many seconds. */
export const ITEM_UPDATE_INTERVAL = 60;

/** A memcached clock: `now` is the current rel_time in seconds. */
export class Clock {
  /** Unix time (seconds) that rel_time 0 stands for. */
  readonly processStarted: number;
  /** Current rel_time in seconds (memcached's `current_time`). */
  now: number;

  /** @param processStarted Unix seconds of rel_time 0; by default now - 62 s, as stock does. */
  constructor(processStarted?: number) {
    this.processStarted = processStarted ?? Math.floor(Date.now() / 1000) - ITEM_UPDATE_INTERVAL - 2;
    this.now = 0;
    this.tick();
  }

  /** Reads the wall clock into `now`. Cost: one Date.now(). */
  tick(): void {
    this.now = Math.floor(Date.now() / 1000) - this.processStarted;
  }

  /** Current Unix time in seconds, as memcached reports it (`STAT time`). */
  unixNow(): number {
    return this.now + this.processStarted;
  }

  /**
   * memcached's realtime(EXPTIME_TO_POSITIVE_TIME(exptime)): converts a client exptime (int32)
   * to rel_time. 0 stays 0 (never); negative values expire at once (rel_time 1).
   */
  realtime(exptime: number): number {
    if (exptime < 0) exptime = REALTIME_MAXDELTA + 1;
    if (exptime === 0) return 0;
    if (exptime > REALTIME_MAXDELTA) {
      if (exptime <= this.processStarted) return 1;
      return (exptime - this.processStarted) >>> 0;
    }
    return (exptime + this.now) >>> 0;
  }

  /** realtime() for an unsigned 32-bit exptime (binary protocol, where the field is u32 but time_t is signed 64-bit). */
  realtimeU32(exptime: number): number {
    if (exptime === 0) return 0;
    if (exptime > REALTIME_MAXDELTA) {
      if (exptime <= this.processStarted) return 1;
      return (exptime - this.processStarted) >>> 0;
    }
    return (exptime + this.now) >>> 0;
  }
}

/** A clock that moves only when told to: for tests of expiry and delayed flush. */
export class ManualClock extends Clock {
  constructor(processStarted = 1_700_000_000) {
    super(processStarted);
    this.now = ITEM_UPDATE_INTERVAL + 2;
  }

  /** Ignores the wall clock. */
  override tick(): void {}

  /** Moves time forward by `seconds`. */
  advance(seconds: number): void {
    this.now += seconds;
  }
}
