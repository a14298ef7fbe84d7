/** Logging: named loggers with levels and a per-shard prefix. */
export { Logger, logger, parseLogLevel, setLogLevel, logLevel, setLogSink, setLogTimestamps, LOG_LEVELS } from "./logger.ts";
export type { LogLevel, LogLevelSpec, LogSink } from "./logger.ts";
