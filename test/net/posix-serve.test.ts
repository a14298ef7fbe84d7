// Conformance suite (serve() and its graceful stop) on the posix stack.
import { posixUnderTest } from "./conformance/posix.ts";
import { serveConformance } from "./conformance/serve.ts";

serveConformance(posixUnderTest());
