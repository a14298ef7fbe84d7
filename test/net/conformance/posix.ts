/** The posix stack as a StackUnderTest (shared by the test/net/posix-*.test.ts files). */
import { configureNet } from "../../../src/net/api.ts";
import { posixStack } from "../../../src/net/posix/stack.ts";
import type { StackUnderTest } from "./harness.ts";

export function posixUnderTest(): StackUnderTest {
  return {
    name: "posix",
    stack: posixStack(),
    setPoisoning: (on) => configureNet({ poisonBuffers: on }),
    recvBufferSize: 16384,
    recvBufferCount: 256,
    families: ["ipv4", "ipv6", "unix"],
  };
}
