// Conformance suite (streams) on the posix stack.
import { posixUnderTest } from "./conformance/posix.ts";
import { streamConformance } from "./conformance/streams.ts";

streamConformance(posixUnderTest());
