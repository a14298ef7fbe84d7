/** The app template: command-line options, supervisor start, main on shard 0. */
export { app } from "./app.ts";
export type { AppConfig, AppContext } from "./app.ts";
export type { SignalPolicy } from "../smp/supervisor.ts";
export { OptionError, parseCommandLine, formatHelp } from "./options.ts";
export type { OptionSpec, OptionSpecs, OptionType, OptionValue, OptionValues, SharedOptions, ParsedCommandLine } from "./options.ts";
