/**
 * Shoal's socket API (both network stacks): listen, connect, UDP channels, addresses.
 * src/index.ts re-exports everything here.
 */
export { listen, connect, bindUdp, serve, netStats, configureNet, networkStack, setNetworkStack } from "./api.ts";
export type { DrainOptions, ServeOptions, Server } from "./api.ts";
export type { PosixStackOptions } from "./posix/stack.ts";
export { CONSUME_ALL, STOP_RECEIVING, needBytes } from "./types.ts";
export type {
  Connection,
  ConnectionInput,
  ConnectionOutput,
  ConnectionOptions,
  ConnectOptions,
  Datagram,
  KeepAliveOptions,
  ShutdownInputOptions,
  Listener,
  ListenerCloseOptions,
  ListenOptions,
  NetStats,
  NetworkStack,
  StreamConsumer,
  StreamReceiver,
  StreamRangeReceiver,
  ReceiverResult,
  ReceiveRangesOptions,
  UdpChannel,
  UdpOptions,
  WriteData,
} from "./types.ts";
export { UnexpectedEofError } from "./errors.ts";
export { parseAddress, formatAddress } from "./address.ts";
export type { AddressInput, SocketAddress, Ipv4Address, Ipv6Address, UnixAddress } from "./address.ts";
