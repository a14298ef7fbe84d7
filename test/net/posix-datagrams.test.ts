// Conformance suite (UDP) on the posix stack.
import { posixUnderTest } from "./conformance/posix.ts";
import { datagramConformance } from "./conformance/datagrams.ts";

datagramConformance(posixUnderTest());
