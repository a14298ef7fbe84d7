// Conformance suite (bad input) on the posix stack.
import { posixUnderTest } from "./conformance/posix.ts";
import { badInputConformance } from "./conformance/bad-input.ts";

badInputConformance(posixUnderTest());
