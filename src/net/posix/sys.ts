/**
 * The posix stack's synchronous socket calls (zig/net.zig through exports_net.zig): set-up,
 * options and addresses, made once per socket and never per message. Sockaddrs are encoded
 * into one native scratch block that only these synchronous calls use.
 */
import { native, type NativeSymbols } from "../../core/native.ts";
import { SystemError } from "../../core/errors.ts";
import { NativeSlab } from "../slab.ts";
import { SOCKADDR_MAX, addressFamily, decodeSockaddr, encodeSockaddr, formatAddress, type SocketAddress } from "../address.ts";

/** Socket types (x86-64/arm64 Linux values). */
export const SOCK_STREAM = 1;
/** UDP sockets. */
export const SOCK_DGRAM = 2;
/** setsockopt level of socket-wide options. */
export const SOL_SOCKET = 1;
/** Allows sending to broadcast addresses. */
export const SO_BROADCAST = 6;
/** setsockopt level of TCP options. */
export const IPPROTO_TCP = 6;
/** Disables Nagle's algorithm. */
export const TCP_NODELAY = 1;
/** shutdown(2): stop receiving. */
export const SHUT_RD = 0;
/** shutdown(2): stop sending (FIN). */
export const SHUT_WR = 1;
/** send flag: EPIPE instead of SIGPIPE on a broken connection. */
export const MSG_NOSIGNAL = 0x4000;
/** accept flag: close-on-exec. */
export const SOCK_CLOEXEC = 0o2000000;

/** zig/net.zig OpenFlags: SO_REUSEPORT. */
export const OPEN_REUSE_PORT = 1;
/** SO_REUSEADDR. */
export const OPEN_REUSE_ADDR = 2;
/** IPV6_V6ONLY. */
export const OPEN_V6_ONLY = 4;
/** TCP_NODELAY (inherited by accepted sockets). */
export const OPEN_NO_DELAY = 8;

let lib: NativeSymbols | undefined;
let scratchSlab: NativeSlab | undefined;
let scratchId = -1;

function sys(): NativeSymbols {
  return (lib ??= native());
}

function scratch(): { address: number; view: Uint8Array } {
  if (scratchSlab === undefined) {
    scratchSlab = new NativeSlab("socket scratch", 256, 1, 1);
    scratchId = scratchSlab.acquire();
  }
  return { address: scratchSlab.address(scratchId), view: scratchSlab.view(scratchId) };
}

function check(op: string, rc: number, detail?: string): number {
  if (rc < 0) throw new SystemError(op, -rc, detail);
  return rc;
}

/**
 * Opens a socket bound to `address` (and listening when `backlog` >= 0) with OPEN_* flags.
 * Returns the fd. Throws SystemError (op "listen" or "bind") naming the address.
 */
export function openSocket(op: string, address: SocketAddress, type: number, flags: number, backlog: number): number {
  const s = scratch();
  const len = encodeSockaddr(address, s.view);
  return check(op, sys().shoal_net_open_socket(addressFamily(address), type, s.address, len, flags, backlog), formatAddress(address));
}

/** A close-on-exec socket of `address`'s family. Throws SystemError (op "socket"). */
export function socketFor(address: SocketAddress, type: number): number {
  return check("socket", sys().shoal_net_socket(addressFamily(address), type, 0));
}

/** Binds `fd` to `address`. Throws SystemError (op "bind"). */
export function bindTo(fd: number, address: SocketAddress): void {
  const s = scratch();
  const len = encodeSockaddr(address, s.view);
  check("bind", sys().shoal_net_bind(fd, s.address, len), formatAddress(address));
}

/** setsockopt of an int option. Throws SystemError naming `op`. */
export function setIntOption(op: string, fd: number, level: number, name: number, value: number): void {
  check(op, sys().shoal_net_set_int(fd, level, name, value));
}

/** getsockname. Throws SystemError (op "getsockname"). */
export function localAddressOf(fd: number): SocketAddress {
  const s = scratch();
  const len = check("getsockname", sys().shoal_net_local_address(fd, s.address, SOCKADDR_MAX));
  return decodeSockaddr(s.view, 0, len);
}

/** getpeername. Throws SystemError (op "getpeername"). */
export function peerAddressOf(fd: number): SocketAddress {
  const s = scratch();
  const len = check("getpeername", sys().shoal_net_peer_address(fd, s.address, SOCKADDR_MAX));
  return decodeSockaddr(s.view, 0, len);
}

/** shutdown(2); returns the negative errno instead of throwing (ENOTCONN after a reset is normal). */
export function shutdownSocket(fd: number, how: number): number {
  return sys().shoal_net_shutdown(fd, how);
}

/** close(2) at once (sockets that never reached the ring). Errors are ignored: the fd is gone. */
export function closeNow(fd: number): void {
  sys().shoal_net_close(fd);
}

/**
 * One step of a lingering close: discards the input queued on `fd`, returns the bytes its send
 * queue still holds, or -1 once the peer ended its side or the socket failed.
 */
export function lingerStep(fd: number): number {
  return sys().shoal_net_linger_step(fd);
}

/** SO_LINGER {1, 0}: the next close sends RST and drops unsent data. */
export function setResetOnClose(fd: number): void {
  sys().shoal_net_set_linger(fd, 1, 0);
}

/** getsockopt of an int option: its value. Throws SystemError naming `op`. */
export function getIntOption(op: string, fd: number, level: number, name: number): number {
  return check(op, sys().shoal_net_get_int(fd, level, name));
}

/**
 * Takes every connection waiting in listening socket `fd`'s accept queue without waiting (the
 * socket is made non-blocking: it is being closed). Returns their fds (close-on-exec, blocking).
 * Stops early, keeping what it took, when the process runs out of descriptors; throws
 * SystemError (op "accept") only when nothing could be taken for another reason than an empty
 * queue.
 */
export function acceptPending(fd: number): number[] {
  const s = scratch();
  const words = new Int32Array(s.view.buffer, s.view.byteOffset, 64);
  const fds: number[] = [];
  for (;;) {
    const n = sys().shoal_net_accept_pending(fd, s.address, 64);
    if (n < 0) {
      if (fds.length > 0) return fds;
      throw new SystemError("accept", -n);
    }
    for (let i = 0; i < n; i++) fds.push(words[i]!);
    if (n < 64) return fds;
  }
}
