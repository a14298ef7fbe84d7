// An integer option takes the integer its text writes, or refuses it: the text was rounded to
// the nearest double first, and judged after.
import { expect, test } from "bun:test";
import { OptionError, parseCommandLine } from "../../src/app/index.ts";

const specs = {
  port: { type: "integer", default: 8080, min: 1, max: 65535, description: "port" },
  level: { type: "integer", min: -10, max: 10, description: "a signed integer" },
  ratio: { type: "number", description: "any number" },
} as const;

function refusal(argv: string[]): string {
  try {
    parseCommandLine(argv, specs);
  } catch (e) {
    expect(e).toBeInstanceOf(OptionError);
    return (e as Error).message;
  }
  return "accepted";
}

test("an integer option refuses a fraction that rounds to an integer, or to a bound (it took 1.0000000000000001 as 1)", () => {
  // Each was accepted: the nearest double of each text is an integer, so "0.99999999999999999"
  // passed --port's min of 1 and "10.0000000000000001" --level's max of 10.
  expect(refusal(["--port", "1.0000000000000001"])).toBe('--port takes an integer, got "1.0000000000000001"');
  expect(refusal(["--port", "0.99999999999999999"])).toBe('--port takes an integer, got "0.99999999999999999"');
  expect(refusal(["--level=10.0000000000000001"])).toBe('--level takes an integer, got "10.0000000000000001"');
  expect(refusal(["--level", "-10.000000000000001"])).toBe('--level takes an integer, got "-10.000000000000001"');
  expect(refusal(["--level", "5e-99999"])).toBe('--level takes an integer, got "5e-99999"');
  // Integers written with a point or an exponent are still integers.
  const ok: [string, number][] = [["80.00", 80], ["8e3", 8000], ["0.5e1", 5], ["+80", 80], ["80.", 80], ["1.5E+2", 150], ["00080", 80]];
  for (const [text, port] of ok) expect({ text, port: parseCommandLine(["--port", text], specs).app.port }).toEqual({ text, port });
  expect(parseCommandLine(["--level", "-1e1"], specs).app.level).toBe(-10);
  // A number option keeps the nearest double, as before.
  expect(parseCommandLine(["--ratio", "1.0000000000000001"], specs).app.ratio).toBe(1);
});

test('an integer option given "-0" holds 0, not -0', () => {
  // It held -0: Object.is(-0, 0) is false, and 1 / -0 is -Infinity.
  const level = parseCommandLine(["--level", "-0"], specs).app.level;
  expect(Object.is(level, 0)).toBe(true);
  expect(Object.is(parseCommandLine(["--level=-0.0e5"], specs).app.level, 0)).toBe(true);
});
