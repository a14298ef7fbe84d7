/**
 * Echo server on Bun.listen, the benchmark's Bun baseline: one handler object for all sockets,
 * bytes a short write left are kept per socket and written on drain. Usage: bun bun-echo.ts PORT
 */
interface State {
  pending: Uint8Array | undefined;
}

const port = Number(process.argv[2]);
Bun.listen<State>({
  hostname: "127.0.0.1",
  port,
  socket: {
    open(s) {
      s.data = { pending: undefined };
      s.setNoDelay(true);
    },
    data(s, d) {
      if (s.data.pending !== undefined) {
        s.data.pending = Buffer.concat([s.data.pending, d]);
        return;
      }
      const n = s.write(d);
      if (n < d.length) s.data.pending = d.slice(Math.max(n, 0));
    },
    drain(s) {
      const p = s.data.pending;
      if (p === undefined) return;
      const n = s.write(p);
      s.data.pending = n < p.length ? p.slice(Math.max(n, 0)) : undefined;
    },
  },
});
console.log("ready");
