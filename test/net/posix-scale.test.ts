// Conformance suite (scale: thousands of connections, large transfers, heap growth) on the posix stack.
import { posixUnderTest } from "./conformance/posix.ts";
import { scaleConformance } from "./conformance/scale.ts";

scaleConformance(posixUnderTest(), { connections: 2000 });
