// The datagram receive pool at its cap, one channel flooded (its reader keeps up, so it hands its
// buffers back at once) and a quiet channel on the same shard that gets a datagram now and then:
// the quiet channel's receive, stopped by ENOBUFS, must get a buffer within a bounded share of
// the flood (the TCP receive had this starvation: test/net/review23-input-starved-flood.test.ts).
// The UDP receive held up when this was written (at most ~1,000 flood datagrams went by per
// quiet one here, against a budget of 20,000): the test pins it.
import { expect, test } from "bun:test";
import { spawn } from "bun";
import { configureNet } from "../../src/net/api.ts";
import { posixStack } from "../../src/net/posix/stack.ts";

configureNet({ udpRecvBufferCount: 2, udpRecvBufferMax: 2 });
const stack = posixStack();

/** Sends small datagrams to the port in argv[1] as fast as it can until stdin closes. */
const FLOODER = `
import socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
port = int(sys.argv[1])
stop = False
def wait():
    global stop
    sys.stdin.read()
    stop = True
threading.Thread(target=wait, daemon=True).start()
msg = b"f" * 512
while not stop:
    try:
        s.sendto(msg, ("127.0.0.1", port))
    except OSError:
        pass
`;

/** Flood datagrams the flooded channel may take before each quiet datagram arrives. */
const FLOOD_BUDGET = 20_000;

test("a flooded UDP channel on a 2-buffer pool: a quiet channel's datagrams each arrive within a bounded share of the flood", async () => {
  const flooded = stack.bindUdp("127.0.0.1:0");
  const quiet = stack.bindUdp("127.0.0.1:0");
  const sender = stack.bindUdp("127.0.0.1:0");
  let floodCount = 0;
  let stop = false;
  const reader = (async () => {
    while (!stop) {
      const d = await flooded.receive();
      if (d === null) break;
      floodCount++;
    }
  })();
  const floodPort = flooded.localAddress.family === "ipv4" ? flooded.localAddress.port : 0;
  const flooder = spawn(["python3", "-c", FLOODER, String(floodPort)], { stdin: "pipe", stdout: "ignore", stderr: "inherit" });
  // The pool is running dry before the quiet channel's first datagram.
  const starvedBefore = stack.stats().recvStarved;
  while (stack.stats().recvStarved === starvedBefore) await Bun.sleep(5);
  const counts: number[] = [];
  let over = false;
  for (let i = 0; i < 10 && !over; i++) {
    const from = floodCount;
    await sender.send("?", quiet.localAddress);
    let settled = false;
    const outcome = await Promise.race([
      quiet.receive().then((d) => (d === null ? "closed" : "received")),
      (async () => {
        // Not a timing bound: the flood is the clock (a slow machine floods slower too).
        while (!settled && floodCount - from < FLOOD_BUDGET) await Bun.sleep(5);
        return "starved";
      })(),
    ]);
    settled = true;
    counts.push(floodCount - from);
    if (outcome !== "received") over = true;
  }
  stop = true;
  flooder.stdin.end();
  await flooder.exited;
  await Promise.all([flooded.close(), quiet.close(), sender.close()]);
  await reader;
  expect({ received: counts.length, overBudget: counts.filter((n) => n >= FLOOD_BUDGET) }).toEqual({ received: 10, overBudget: [] });
}, 120_000);
