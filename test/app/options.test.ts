import { describe, expect, test } from "bun:test";
import { OptionError, formatHelp, parseCommandLine } from "../../src/app/index.ts";
import { checkSpecs } from "../../src/app/options.ts";
import { formatCpuset, parseCpuset } from "../../src/smp/index.ts";

const specs = {
  port: { type: "integer", default: 8080, min: 1, max: 65535, description: "port to listen on" },
  host: { type: "string", description: "address to bind" },
  mode: { type: "string", default: "fast", choices: ["fast", "safe"], description: "how to run" },
  verbose: { type: "boolean", description: "say more" },
  ratio: { type: "number", default: 0.5, description: "a fraction" },
  maxConnections: { type: "integer", default: 100, description: "connections per shard" },
} as const;

function fails(argv: string[], message: string): void {
  let err: unknown;
  try {
    parseCommandLine(argv, specs);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(OptionError);
  expect((err as OptionError).code).toBe("ERR_BAD_OPTION");
  expect((err as Error).message).toContain(message);
}

describe("parseCommandLine", () => {
  test("defaults", () => {
    const p = parseCommandLine([], specs);
    expect(p.help).toBe(false);
    expect(p.app).toEqual({ port: 8080, host: undefined, mode: "fast", verbose: false, ratio: 0.5, maxConnections: 100 });
    expect(p.shared).toEqual({
      smp: undefined,
      cpuset: undefined,
      overprovisioned: false,
      taskQuotaMs: 0.5,
      idlePollTimeUs: 200,
      blockedReactorNotifyMs: 25,
      logLevel: "info",
      encodeLocalCalls: false,
    });
  });

  test("every shared option, both spellings, and the app's own", () => {
    const p = parseCommandLine(
      [
        "--smp", "4", "--cpuset=0-3,6", "--overprovisioned", "--task-quota-ms", "0.25", "--idle-poll-time-us=0",
        "--blocked-reactor-notify-ms", "10", "--log-level", "warn,smp=debug", "--encode-local-calls",
        "--port=9000", "--host", "::1", "--mode", "safe", "--verbose", "--ratio", "-1.5", "--max-connections", "7",
      ],
      specs,
    );
    expect(p.shared).toEqual({
      smp: 4,
      cpuset: [0, 1, 2, 3, 6],
      overprovisioned: true,
      taskQuotaMs: 0.25,
      idlePollTimeUs: 0,
      blockedReactorNotifyMs: 10,
      logLevel: "warn,smp=debug",
      encodeLocalCalls: true,
    });
    expect(p.app).toEqual({ port: 9000, host: "::1", mode: "safe", verbose: true, ratio: -1.5, maxConnections: 7 });
  });

  test("booleans: --no-x and =true/false; the last occurrence wins", () => {
    expect(parseCommandLine(["--verbose", "--no-verbose"], specs).app.verbose).toBe(false);
    expect(parseCommandLine(["--verbose=false"], specs).app.verbose).toBe(false);
    expect(parseCommandLine(["--overprovisioned=true"], specs).shared.overprovisioned).toBe(true);
    expect(parseCommandLine(["--port", "1", "--port", "2"], specs).app.port).toBe(2);
  });

  test("--no-x=value is refused as taking no value (it was called unknown, with the hint --x)", () => {
    fails(["--no-verbose=true"], "--no-verbose takes no value; write --verbose=false or --no-verbose");
    fails(["--no-overprovisioned=1"], "--no-overprovisioned takes no value");
  });

  test("--help and -h", () => {
    expect(parseCommandLine(["--help"], specs).help).toBe(true);
    expect(parseCommandLine(["-h", "--port", "5"], specs).help).toBe(true);
  });

  test("--help=value is refused as such (it was an unknown option with the hint --help)", () => {
    fails(["--help=1"], "--help takes no value");
    let message = "";
    try {
      parseCommandLine(["--help=yes"], specs);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).not.toContain("did you mean");
  });

  test("unknown options are rejected, with a suggestion for typos", () => {
    fails(["--bogus"], "unknown option --bogus; see --help");
    fails(["--smpp", "2"], "unknown option --smpp; did you mean --smp?");
    fails(["--prot", "80"], "did you mean --port?");
    fails(["stray"], 'unexpected argument "stray"');
    fails(["--"], "takes no positional arguments");
  });

  test("bad values say which option and why", () => {
    fails(["--smp", "0"], "--smp must be at least 1");
    fails(["--smp", "two"], '--smp takes a number, got "two"');
    fails(["--smp", "1.5"], "--smp takes an integer");
    // Past 2^53 the value read would not be the one written: refused, not rounded.
    fails(["--max-connections", "9007199254740993"], "--max-connections takes an integer of at most");
    fails(["--max-connections", "99999999999999999999"], "--max-connections takes an integer of at most");
    fails(["--smp"], "--smp needs a value");
    fails(["--smp", "--verbose"], "--smp needs a value");
    fails(["--cpuset", "3-1"], "runs backwards");
    fails(["--cpuset", "a"], "is not a CPU number");
    fails(["--log-level", "loud"], 'bad log level "loud"');
    fails(["--task-quota-ms", "0"], "--task-quota-ms must be at least");
    fails(["--port", "70000"], "--port must be at most 65535");
    fails(["--mode", "slow"], "--mode must be one of fast, safe");
    fails(["--verbose=maybe"], "--verbose takes true or false");
    // Plain decimal numbers only (Number() takes hex, binary and padded text).
    fails(["--port", "0x1F90"], '--port takes a number, got "0x1F90"');
    fails(["--smp", " 2 "], "--smp takes a number");
    fails(["--smp", "0b10"], "--smp takes a number");
  });

  test("required options", () => {
    const req = { key: { type: "string", required: true, description: "a key" } } as const;
    expect(() => parseCommandLine([], req)).toThrow("--key is required");
    expect(parseCommandLine(["--key", "k"], req).app.key).toBe("k");
    expect(parseCommandLine(["--help"], req).help).toBe(true);
  });

  test("a spec's check refuses a given value with an OptionError naming the option; defaults are not checked", () => {
    const checked = {
      host: {
        type: "string",
        default: "any",
        description: "an address",
        check(v: string) {
          if (v !== "127.0.0.1") throw new TypeError(`"${v}" is not an address`);
        },
      },
    } as const;
    expect(() => parseCommandLine(["--host", "nowhere"], checked)).toThrow(new OptionError('--host: "nowhere" is not an address'));
    expect(parseCommandLine(["--host=127.0.0.1"], checked).app.host).toBe("127.0.0.1");
    expect(parseCommandLine([], checked).app.host).toBe("any");
    expect(() => checkSpecs({ x: { type: "string", description: "", check: 1 as never } })).toThrow("check must be a function");
  });

  test("an app may not redefine Shoal's options or use odd names", () => {
    expect(() => checkSpecs({ smp: { type: "integer", description: "" } })).toThrow("one of Shoal's own options");
    expect(() => checkSpecs({ logLevel: { type: "string", description: "" } })).toThrow("one of Shoal's own options");
    expect(() => checkSpecs({ "bad-name": { type: "string", description: "" } })).toThrow("camelCase");
    expect(() => checkSpecs({ x: { type: "date" as never, description: "" } })).toThrow('type must be "string"');
  });

  test("a spec's default, bounds and choices are checked: a default of the wrong type reached main as it was", () => {
    // The types let these through (a spec's default is typed for any option kind).
    const bad: [Record<string, unknown>, string][] = [
      [{ type: "integer", default: "8080" }, 'option "x": default must be an integer, got "8080"'],
      [{ type: "integer", default: 1.5 }, 'option "x": default must be an integer, got 1.5'],
      [{ type: "number", default: Number.NaN }, 'option "x": default must be a finite number, got NaN'],
      [{ type: "boolean", default: "yes" }, 'option "x": default must be true or false, got "yes"'],
      [{ type: "string", default: 7 }, 'option "x": default must be a string, got 7'],
      [{ type: "string", default: "slow", choices: ["fast", "safe"] }, 'option "x": default "slow" is not one of its choices (fast, safe)'],
      [{ type: "integer", default: 0, min: 1 }, 'option "x": default 0 is below its min 1'],
      [{ type: "integer", default: 9, max: 8 }, 'option "x": default 9 is above its max 8'],
      [{ type: "integer", min: 5, max: 1 }, 'option "x": min 5 is above max 1'],
      [{ type: "integer", min: "1" }, 'option "x": min must be a finite number, got "1"'],
      [{ type: "string", min: 1 }, 'option "x": min and max apply to numbers'],
      [{ type: "integer", choices: ["1"] }, 'option "x": choices apply to strings'],
      [{ type: "string", choices: "fast" }, 'option "x": choices must be a non-empty array of strings'],
      [{ type: "string", choices: [] }, 'option "x": choices must be a non-empty array of strings'],
      [{ type: "string", required: "yes" }, 'option "x": required must be true or false'],
      [{ type: "string", valueName: 5 }, 'option "x": valueName must be a string'],
    ];
    for (const [spec, message] of bad) {
      expect(() => checkSpecs({ x: { description: "", ...spec } as never })).toThrow(new OptionError(message));
    }
    expect(() => checkSpecs({ x: { type: "number", default: 0.5, min: 0, max: 1, description: "" }, y: { type: "string", default: "a", choices: ["a"], description: "" } })).not.toThrow();
  });

  test("the parsed values are typed from the spec", () => {
    const p = parseCommandLine([], specs);
    const port: number = p.app.port;
    const host: string | undefined = p.app.host;
    const verbose: boolean = p.app.verbose;
    // @ts-expect-error: host may be undefined (no default)
    const hostString: string = p.app.host;
    expect([port, host, verbose, hostString]).toEqual([8080, undefined, false, undefined]);
  });
});

describe("formatHelp", () => {
  test("lists the app's options with defaults, then Shoal's", () => {
    const help = formatHelp("demo", "Demonstrates things.", specs);
    expect(help).toStartWith("Usage: demo [options]\n\nDemonstrates things.\n\nOptions:\n");
    expect(help).toContain("--port N");
    expect(help).toContain("port to listen on (default: 8080)");
    expect(help).toContain("--mode fast|safe");
    expect(help).toContain("--max-connections N");
    for (const flag of ["--smp N", "--cpuset LIST", "--overprovisioned", "--task-quota-ms MS", "--idle-poll-time-us US", "--blocked-reactor-notify-ms MS", "--log-level LEVEL", "--encode-local-calls", "-h, --help"]) {
      expect(help).toContain(flag);
    }
    expect(help.indexOf("Shoal options:")).toBeGreaterThan(help.indexOf("--max-connections"));
  });
});

describe("cpusets", () => {
  test("parse and format", () => {
    expect(parseCpuset("0-3,6")).toEqual([0, 1, 2, 3, 6]);
    expect(parseCpuset(" 6, 0-1 ,1")).toEqual([0, 1, 6]);
    expect(formatCpuset([0, 1, 2, 3, 6, 8, 9])).toBe("0-3,6,8-9");
    expect(() => parseCpuset("")).toThrow("empty");
    expect(() => parseCpuset("1-")).toThrow('"1-" is not a CPU number');
    expect(() => parseCpuset("2000")).toThrow("beyond 1023");
  });
});
