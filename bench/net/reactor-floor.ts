/**
 * Diagnostic server for bench/net/echo.bench.ts: the same echo as examples/echo, but straight
 * from receive completions to sends through Shoal's reactor and loop, with no Connection,
 * input or output objects (and none of their checks). Its CPU per message is the floor the
 * core loop and the Bun runtime set; Shoal minus this is what the socket API costs.
 * Usage: bun bench/net/reactor-floor.ts PORT
 */
import { CQE_F_MORE, IoOp, configureLoop, reactor, refLoop } from "../../src/index.ts";
import { RxRing } from "../../src/net/posix/rx-ring.ts";
import { MSG_NOSIGNAL, OPEN_NO_DELAY, OPEN_REUSE_ADDR, SOCK_CLOEXEC, SOCK_STREAM, openSocket } from "../../src/net/posix/sys.ts";
import { parseAddress } from "../../src/net/address.ts";

configureLoop({ overprovisioned: true });
const r = reactor();
const GROUP = 0x7e;
const rx = new RxRing(r.nativeHandle, GROUP, 1024, 16384, 1024);
const recvExtra = { sqeFlags: 1 << 5, buf: GROUP, ioprio: 1 << 1 };
const fd = openSocket("listen", parseAddress(`127.0.0.1:${process.argv[2]}`), SOCK_STREAM, OPEN_REUSE_ADDR | OPEN_NO_DELAY, 4096);
refLoop();

/** One connection: received buffers queue up and go back out one send at a time, then recycle. */
class Echo {
  private readonly queue: number[] = [];
  private sending = -1;
  private readonly onRecv = {
    complete: (res: number, flags: number) => {
      if (res > 0) {
        const bid = flags >>> 16;
        rx.taken(bid);
        this.queue.push(bid, res);
        this.send();
        if ((flags & CQE_F_MORE) === 0) this.arm();
      } else if (res < 0 && res !== -105) {
        r.close(this.fd).catch(() => {});
      } else if (res === -105) {
        this.arm();
      }
      rx.publish();
    },
  };
  private readonly onSent = {
    complete: () => {
      rx.release(this.sending);
      this.sending = -1;
      this.send();
      rx.publish();
    },
  };

  constructor(private readonly fd: number) {
    this.arm();
  }

  private arm(): void {
    r.prepare(IoOp.RECV, this.fd, 0, 0, 0, 0, this.onRecv, recvExtra);
  }

  private send(): void {
    if (this.sending >= 0 || this.queue.length === 0) return;
    const bid = this.queue.shift()!;
    const len = this.queue.shift()!;
    this.sending = bid;
    r.prepare(IoOp.SEND, this.fd, rx.bufsAddress + bid * rx.bufferSize, len, 0, MSG_NOSIGNAL, this.onSent);
  }
}

const onAccept = {
  complete: (res: number, flags: number) => {
    if (res >= 0) new Echo(res);
    if ((flags & CQE_F_MORE) === 0) r.prepare(IoOp.ACCEPT, fd, 0, 0, 0, SOCK_CLOEXEC, onAccept, { ioprio: 1 });
  },
};
r.prepare(IoOp.ACCEPT, fd, 0, 0, 0, SOCK_CLOEXEC, onAccept, { ioprio: 1 });
console.log("ready");
