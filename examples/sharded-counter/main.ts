/**
 * Word counting with a Sharded<T> across every shard. Each word belongs to one shard (its hash
 * modulo smp.count), like keys in a sharded database. Every shard reads its own share of a
 * generated text and sends each batch of words to the batch's owner with invokeOn (all-to-all
 * traffic over the rings); main then asks every shard for its totals and its most frequent
 * words with mapReduce, and merges them on shard 0.
 *
 *   bun examples/sharded-counter/main.ts --smp 2 --words 200000 --top 5
 *   bun examples/sharded-counter/main.ts --smp 4 --overprovisioned
 *
 * Ends by returning 0 (every counter's stop() runs on its shard first); SIGINT/SIGTERM while it
 * runs stop it the same way.
 */
import { maybeYield, app, Semaphore, sharded, shutdownSignal, smp, thisShard, type Sharded } from "shoal";

/** Batches a shard sends ahead of their owners' answers. */
const IN_FLIGHT = 64;

function hash(word: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < word.length; i++) h = Math.imul(h ^ word.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** One shard's part of the counts: only the words that hash to this shard. */
class WordCounter {
  private readonly counts = new Map<string, number>();
  private total = 0;

  /** Counts a batch of words, all owned by this shard. Returns the distinct words seen so far. */
  addAll(words: string[]): number {
    for (const w of words) {
      if (hash(w) % smp.count !== thisShard()) throw new Error(`"${w}" does not belong on shard ${thisShard()}`);
      this.counts.set(w, (this.counts.get(w) ?? 0) + 1);
    }
    this.total += words.length;
    return this.counts.size;
  }

  /** Words counted on this shard. */
  totalWords(): number {
    return this.total;
  }

  /** This shard's `k` most frequent words, most frequent first. */
  top(k: number): [string, number][] {
    return [...this.counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, k);
  }

  /**
   * Reads this shard's share of the text (`words` words) and sends every batch of `batch` words
   * to the shard that owns them, at most IN_FLIGHT batches unanswered at a time (a Semaphore:
   * reading ahead of the owners would queue the whole text in messages). Resolves when every
   * batch was counted by its owner; rejects with the first failure.
   */
  async ingest(words: number, batch: number): Promise<number> {
    const batches: string[][] = Array.from({ length: smp.count }, () => []);
    const window = new Semaphore(IN_FLIGHT);
    let failure: { error: unknown } | undefined;
    const send = async (owner: number, b: string[]): Promise<void> => {
      await window.wait();
      counters.invokeOn(owner, "addAll", b).then(
        () => window.signal(),
        (error: unknown) => {
          failure ??= { error };
          window.signal();
        },
      );
    };
    let n = 0;
    const stop = shutdownSignal();
    for (const word of text(words, thisShard())) {
      // A long loop on a shard gives the loop a turn now and then (the task quota), and stops
      // when the app shuts down (SIGINT/SIGTERM): it ran on to the shutdown timeout.
      if ((++n & 1023) === 0) {
        await maybeYield();
        if (stop.aborted || failure !== undefined) break;
      }
      const owner = hash(word) % smp.count;
      const b = batches[owner]!;
      b.push(word);
      if (b.length === batch) {
        batches[owner] = [];
        await send(owner, b);
      }
    }
    for (let owner = 0; owner < batches.length; owner++) if (batches[owner]!.length > 0) await send(owner, batches[owner]!);
    // Every unit back: every batch was answered.
    await window.wait(IN_FLIGHT);
    if (failure !== undefined) throw failure.error;
    return stop.aborted ? n : words;
  }

  /** How this shard's part looks (for the per-shard table). */
  summary(): { shard: number; distinct: number; words: number } {
    return { shard: thisShard(), distinct: this.counts.size, words: this.total };
  }

  stop(): void {
    this.counts.clear();
  }
}

const counters: Sharded<WordCounter, []> = sharded(WordCounter);

const VOCABULARY = (
  "the of and to a in is it you that he was for on are with as his they be at one have this from or had by " +
  "hot word but what some we can out other were all there when up use your how said an each she which do " +
  "their time if will way about many then them write would like so these her long make thing see him two"
).split(" ");

/** A deterministic text (one per part): Zipf-like word frequencies from a small generator. */
function* text(words: number, part: number): Generator<string> {
  let seed = 12345 + part * 7919;
  for (let i = 0; i < words; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const r = seed / 2 ** 32;
    yield VOCABULARY[Math.floor(VOCABULARY.length * r * r)]!;
  }
}

app(
  {
    name: "sharded-counter",
    description: "Counts words on every shard: each word is owned by one shard, and shard 0 merges the results.",
    options: {
      words: { type: "integer", default: 100_000, min: 1, description: "words of text to count" },
      // A message holds at most 128 KiB: 10,000 words of this vocabulary fit with room to spare.
      batch: { type: "integer", default: 1000, min: 1, max: 10_000, description: "words per message to a shard" },
      top: { type: "integer", default: 10, min: 1, description: "how many of the most frequent words to print" },
    },
  },
  async ({ options, log, signal }) => {
    await counters.start();
    const started = performance.now();
    // Every shard reads its share; the first shards take the remainder.
    const share = (k: number) => Math.floor(options.words / smp.count) + (k < options.words % smp.count ? 1 : 0);
    const reading: Promise<number>[] = [];
    for (let k = 0; k < smp.count; k++) reading.push(counters.invokeOn(k, "ingest", share(k), options.batch));
    await Promise.all(reading);
    if (signal.aborted) {
      log.info("interrupted: the count is incomplete");
      return 0;
    }
    const ms = performance.now() - started;

    const total = await counters.mapReduce("totalWords", "sum", 0);
    const top = await counters.mapReduce(
      "top",
      (all: [string, number][], part) => [...all, ...part],
      [] as [string, number][],
      options.top,
    );
    top.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const parts = await counters.invokeOnAll("summary");

    log.info(`${total} words counted on ${smp.count} shard(s) in ${ms.toFixed(1)} ms`);
    console.log(`words: ${total} (expected ${options.words}), shards: ${smp.count}, ${(total / (ms / 1000) / 1e6).toFixed(2)} M words/s`);
    for (const p of parts) console.log(`  shard ${p.shard}: ${p.words} words, ${p.distinct} distinct`);
    console.log(`top ${options.top}:`);
    for (const [word, n] of top.slice(0, options.top)) console.log(`  ${word.padEnd(8)} ${n}`);
    return total === options.words ? 0 : 1;
  },
);
