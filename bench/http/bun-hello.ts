/**
 * The HTTP benchmark's Bun.serve peer: every request gets "Hello, World!" (text/plain), as
 * examples/http-hello and the nginx peer answer.
 *
 *   node_modules/.bin/bun bench/http/bun-hello.ts PORT
 */
const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error("usage: bun-hello.ts PORT");
  process.exit(2);
}
Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch: () => new Response("Hello, World!", { headers: { "Content-Type": "text/plain" } }),
});
