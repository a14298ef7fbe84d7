/**
 * Protocol cases for the differential tests: byte sequences, each sent on a fresh connection,
 * in this order, to stock memcached 1.6.18 and to ours; the answers must be identical byte for
 * byte, CAS values included (both servers start fresh and see the same commands in the same
 * order). Written from protocol.txt and stock's proto_text.c / proto_bin.c, covering every
 * command, its noreply form and its error paths.
 */
import { b, cat } from "./harness.ts";
import { binRequest, incrExtras, setExtras, u32Extras } from "./binproto.ts";

export interface Case {
  name: string;
  send: Uint8Array;
  /** Binary connection: the sentinel is a NOOP packet. */
  binary?: boolean;
  /** Do not append the sentinel (the connection is expected to close or hang). */
  noSentinel?: boolean;
  /** Only compare against stock unsegmented (the answer depends on how bytes arrive). */
  segmentSensitive?: boolean;
  /** Depends on CAS values being stock's exact sequence (skipped with several shards). */
  exactCas?: boolean;
}

const K250 = "k".repeat(250);
const K251 = "k".repeat(251);
const big = (n: number, c = "x"): string => c.repeat(n);

/** Text cases (a "mn\r\n" sentinel is appended unless noSentinel). */
const text: [string, string, Partial<Case>?][] = [
  // ---- storage basics
  ["set/get", "set foo 5 0 3\r\nbar\r\nget foo\r\n"],
  ["set noreply", "set foo2 0 0 1 noreply\r\na\r\nget foo2\r\n"],
  ["add existing and new", "add foo 0 0 1\r\nz\r\nadd foo3 7 0 2\r\nzz\r\nget foo3\r\n"],
  ["replace missing and existing", "replace nokey 0 0 1\r\nz\r\nreplace foo3 1 0 3\r\nabc\r\ngets foo3\r\n"],
  ["append/prepend", "set ap 3 0 2\r\nmm\r\nappend ap 9 0 2\r\nzz\r\nprepend ap 9 0 2\r\naa\r\nget ap\r\nappend none 0 0 1\r\nx\r\n"],
  ["append noreply", "append ap 0 0 1 noreply\r\n!\r\nprepend ap 0 0 1 noreply\r\n?\r\nget ap\r\n"],
  ["cas flow", "set c1 0 0 1\r\na\r\ngets c1\r\ncas c1 0 0 1 999\r\nb\r\ncas nothere 0 0 1 1\r\nb\r\ncas c1 0 0 1 0\r\nb\r\n"],
  ["cas match", "gets c1\r\ncas c1 4 0 2 9\r\nzz\r\n"],
  ["cas noreply", "cas c1 0 0 1 5 noreply\r\nq\r\nget c1\r\n"],
  ["zero length value", "set empty 0 0 0\r\n\r\nget empty\r\n"],
  ["flags max", "set fl 4294967295 0 1\r\nx\r\nget fl\r\n"],
  ["flags wrap 2^32", "set fl2 4294967296 0 1\r\nx\r\nget fl2\r\n"],
  ["flags negative", "set fl3 -1 0 1\r\nx\r\n"],
  ["flags -0", "set fl4 -0 0 1\r\nx\r\nget fl4\r\n"],
  ["flags garbage", "set fl5 12a 0 1\r\nx\r\n"],
  ["flags plus sign", "set fl6 +7 0 1\r\nx\r\nget fl6\r\n"],
  ["exptime garbage", "set ex 0 abc 1\r\nx\r\n"],
  ["exptime negative expires", "set exneg 0 -1 1\r\nx\r\nget exneg\r\n"],
  ["exptime absolute past", "set expast 0 2592001 1\r\nx\r\nget expast\r\n"],
  ["exptime absolute future", "set exfut 0 4102444800 1\r\nx\r\nget exfut\r\n"],
  ["length negative", "set neg 0 0 -1\r\nx\r\n"],
  ["length huge", "set huge 0 0 4294967296\r\n\r\nget huge\r\n"],
  ["length over INT_MAX-2", "set huge2 0 0 2147483646\r\n"],
  ["length garbage", "set lg 0 0 1x\r\nx\r\n"],
  ["too large", `set toolarge 0 0 2000000\r\n${big(2000000)}\r\nget toolarge\r\n`],
  ["too large replaces old", `set tl2 0 0 1\r\nx\r\nset tl2 0 0 1048577\r\n${big(1048577)}\r\nget tl2\r\n`],
  ["largest item fits", `set fits 0 0 1048513\r\n${big(1048513)}\r\nget fits\r\n`],
  ["one byte too large", `set fits2 0 0 1048514\r\n${big(1048514)}\r\n`],
  ["too large with flags", `set fits3 1 0 1048513\r\n${big(1048513)}\r\n`],
  ["too large noreply", `set tln 0 0 2000000 noreply\r\n${big(2000000)}\r\nget tln\r\n`],
  ["bad data chunk", "set bad 0 0 1\r\nabc\r\nget bad\r\n"],
  ["bad data chunk noreply", "set bad 0 0 1 noreply\r\nabc\r\n"],
  ["data without \\r", "set nr 0 0 3\r\nabc\nget nr\r\n"],
  ["key 250", `set ${K250} 0 0 1\r\nx\r\nget ${K250}\r\n`],
  ["key 251 set", `set ${K251} 0 0 1\r\nx\r\n`],
  ["key 251 get", `get ${K251}\r\n`],
  ["multiget with long key drops values", `get foo ${K251} foo\r\n`],
  ["set wrong token count", "set a 0 0\r\nset a 0 0 1 noreply extra\r\nset\r\n"],
  ["set with tabs", "set tab 0 0\t1\r\nx\r\nget tab\r\n"],
  ["cas wrong tokens", "cas a 0 0 1\r\n"],
  ["cas bad unique", "cas c1 0 0 1 -5\r\nx\r\ncas c1 0 0 1 abc\r\nx\r\n"],
  ["storage with 24 tokens", "set a 0 0 1 b c d e f g h i j k l m n o p q r s t u v w x\r\n"],
  // ---- retrieval
  ["get missing", "get nothing\r\n"],
  ["get no key", "get\r\nget \r\n"],
  ["multiget", "get foo foo2 nothing foo3 foo\r\n"],
  ["multiget 40 keys", `get ${Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? "foo" : `miss${i}`)).join(" ")}\r\n`],
  ["gets multi", "gets foo foo3 c1\r\n"],
  ["bget", "bget foo\r\n"],
  ["gat", "gat 100 foo nothing foo3\r\ngats 0 foo\r\n"],
  ["gat bad exptime", "gat abc foo\r\n"],
  ["gat no key", "gat 10\r\n"],
  ["get spaces", "get   foo    foo3  \r\n"],
  ["get with NUL", "get foo\x00foo3\r\n"],
  // ---- touch
  ["touch", "touch foo 100\r\ntouch nothing 100\r\ntouch foo abc\r\ntouch foo 10 noreply\r\n"],
  ["touch wrong tokens", "touch foo\r\n"],
  // ---- incr/decr
  ["incr basic", "set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 3\r\nget n\r\n"],
  ["decr below zero", "decr n 100\r\nget n\r\n"],
  ["decr pads with spaces", "set d 0 0 3\r\n100\r\ndecr d 1\r\nget d\r\nincr d 1\r\nget d\r\n"],
  ["incr grows", "set g 0 0 1\r\n9\r\nincr g 1\r\nget g\r\n"],
  ["incr wraps 2^64", "set w 0 0 20\r\n18446744073709551615\r\nincr w 1\r\nget w\r\nincr w 18446744073709551615\r\n"],
  ["incr delta too big", "incr n 18446744073709551616\r\n"],
  ["incr delta negative", "incr n -1\r\n"],
  ["incr non-numeric", "set nn 0 0 3\r\nabc\r\nincr nn 1\r\ndecr nn 1\r\n"],
  // strtoull stops at a NUL: the number before it counts (stock); a leading NUL is non-numeric.
  ["incr value with a NUL after digits", "set z1 0 0 3\r\n1\x002\r\nincr z1 5\r\nget z1\r\nset z2 0 0 3\r\n7\x00x\r\ndecr z2 1\r\nget z2\r\nset z3 0 0 2\r\n4\x00\r\nma z3 v\r\nset z4 0 0 2\r\n\x004\r\nincr z4 1\r\n"],
  ["incr empty value", "incr empty 1\r\n"],
  ["incr missing", "incr nokey 1\r\ndecr nokey 1\r\n"],
  ["incr noreply", "incr n 1 noreply\r\nget n\r\n"],
  ["incr leading space value", "set sp 0 0 3\r\n 42\r\nincr sp 1\r\n"],
  ["incr value with trailing text", "set tt 0 0 5\r\n12 ab\r\nincr tt 1\r\nget tt\r\n"],
  ["incr value too big", "set vb 0 0 20\r\n99999999999999999999\r\nincr vb 1\r\n"],
  ["incr wrong tokens", "incr n\r\nincr n 1 2 3\r\n"],
  ["incr long key", `incr ${K251} 1\r\n`],
  // ---- delete
  ["delete", "set del 0 0 1\r\nx\r\ndelete del\r\ndelete del\r\n"],
  ["delete noreply", "set del 0 0 1\r\nx\r\ndelete del noreply\r\nget del\r\n"],
  ["delete 0", "set del 0 0 1\r\nx\r\ndelete del 0\r\ndelete del 0 noreply\r\n"],
  ["delete bad hold", "delete del 5\r\ndelete del 0 extra\r\ndelete del 1 noreply\r\n"],
  ["delete wrong tokens", "delete\r\ndelete a b c d\r\n"],
  ["delete long key", `delete ${K251}\r\n`],
  // ---- misc
  ["version", "version\r\n"],
  ["verbosity", "verbosity 1\r\nverbosity\r\nverbosity abc\r\nverbosity 5 noreply\r\nverbosity 0\r\n"],
  ["unknown", "foo\r\nfoo bar\r\nGET foo\r\n"],
  ["empty lines", "\r\n\n\r\r\n  \r\n"],
  ["short command", "g\r\nx y\r\n"],
  ["lone \\n lines", "get foo\nget foo3\n"],
  ["unknown meta", "mz foo\r\nm\r\n"],
  ["flush_all bad", "flush_all abc\r\nflush_all 1 2 3\r\n"],
  ["cache_memlimit", "cache_memlimit 5\r\ncache_memlimit abc\r\ncache_memlimit 2000000000\r\n"],
  ["shutdown disabled", "shutdown\r\n"],
  ["slabs", "slabs\r\nslabs automove 1\r\nslabs automove 9\r\nslabs reassign 1 1\r\nslabs reassign 99 1\r\nslabs reassign x 1\r\n"],
  ["lru_crawler bad", "lru_crawler\r\nlru_crawler foo\r\nlru_crawler crawl 99\r\nlru_crawler sleep 2000000\r\nlru_crawler tocrawl x\r\n"],
  ["lru_crawler enable while it runs", "lru_crawler enable\r\n"],
  // Stock refuses watch and metadump while answers of earlier commands wait unsent.
  // Stock sends after the 21st completed command of a read (a set: once its value is stored),
  // then after every 20th; an over-long key drops what was not sent yet.
  ["the 21st command, a set, is sent before a drop", `${"delete y21\r\n".repeat(20)}set y21 0 0 1\r\n1\r\nget y21 ${big(251, "k")}\r\n`, { segmentSensitive: true }],
  ["the 41st command, a set, is sent before a drop", `${"delete y41\r\n".repeat(40)}set y41 0 0 1\r\n1\r\nget y41 ${big(251, "k")}\r\n`, { segmentSensitive: true }],
  ["the 42nd command is not sent before a drop", `${"delete y42\r\n".repeat(41)}set y42 0 0 1\r\n1\r\nget y42 ${big(251, "k")}\r\n`, { segmentSensitive: true }],
  // mf0 and mf1 live on different shards (2 shards): one of them is another shard's key.
  ["ms with more than 20 tokens reads no value", "ms mf0 3 a b c d e f g h i j k l m n o p q r s t\r\n196xymn\r\nms mf1 3 a b c d e f g h i j k l m n o p q r s t\r\n196xymn\r\nmg mf0 v\r\nmg mf1 v\r\n"],
  // A get (a send point) forwarded to another shard: answers of commands after it are unsent.
  ["answers after a forwarded get are dropped with the connection", "get mf0\r\nmd mf0 q\r\nget mf1\r\nmd mf1 q\r\nGET / HTTP/1.1\r\n", { noSentinel: true, segmentSensitive: true }],
  ["deletes forwarded after a send point are not sent", `${"delete mf0\r\ndelete mf1\r\n".repeat(11)}get mf0 ${big(251, "k")}\r\n`, { segmentSensitive: true }],
  // A too-long key fails a multiget after the keys before it were looked up where they live
  // (mf0 and mf1: different shards): fetched (h1), touched (gat 0: t-1 instead of t1000).
  ["a multiget's too-long key: the keys before it were fetched on their shards", `set mg0 0 0 1\r\nx\r\nset mf1 0 0 1\r\ny\r\nset mf0 0 0 1\r\nz\r\nget mf0 mf1 ${big(251, "L")}\r\nmg mf0 h\r\nmg mf1 h\r\n`, { segmentSensitive: true }],
  ["a gat's too-long key: the keys before it were touched on their shards", `set mf0 0 1000 1\r\nz\r\nset mf1 0 1000 1\r\ny\r\ngat 0 mf0 mf1 ${big(251, "L")}\r\nmg mf0 t\r\nmg mf1 t\r\n`, { segmentSensitive: true }],
  ["watch after other answers in the same read", "version\r\nwatch\r\n", { segmentSensitive: true }],
  ["watch refused before its arguments are read", "verbosity 0\r\nwatch x\r\n", { segmentSensitive: true }],
  ["metadump after other answers in the same read", "version\r\nlru_crawler metadump all\r\n", { segmentSensitive: true }],
  ["watch: a log stream from then on, commands unread", "watch\r\nversion\r\n", { noSentinel: true }],
  ["lru bad", "lru\r\nlru foo\r\nlru mode fast\r\nlru tune 50 50 1 1\r\nlru mode flat\r\nlru mode segmented\r\n"],
  ["stats bad", "stats nonsense\r\nstats detail\r\nstats detail foo\r\nstats cachedump\r\nstats cachedump x 1\r\nstats cachedump 99 1\r\n"],
  ["stats sizes", "stats sizes\r\n"],
  ["stats extstore", "stats extstore\r\n"],
  ["stats detail", "stats detail on\r\nset p:a 0 0 1\r\nx\r\nget p:a p:b\r\ndelete p:a\r\nstats detail dump\r\nstats detail off\r\n"],
  // ---- meta: mn, me
  ["mn", "mn\r\nmn foo\r\n"],
  ["me", "set meta1 5 0 2\r\nhi\r\nme meta1\r\nme nothing\r\nme\r\n"],
  ["me base64", "me bWV0YTE= b\r\nme !!!! b\r\n"],
  // ---- meta: mg
  ["mg miss", "mg nothing\r\nmg nothing v\r\nmg nothing q\r\nmg nothing O123 k q\r\nmg nothing O123 k\r\n"],
  ["mg hit flags", "set mg1 7 0 3\r\nabc\r\nmg mg1\r\nmg mg1 v\r\nmg mg1 s f c t k O99 h l\r\nmg mg1 q v\r\n"],
  ["mg ttl", "mg mg1 T30 t\r\nmg mg1 t v\r\n"],
  ["mg errors", "mg\r\nmg mg1 v v\r\nmg mg1 x\r\nmg mg1 Tabc\r\nmg mg1 Nabc\r\nmg mg1 O123456789012345678901234567890123\r\n"],
  ["mg too many flags", "mg mg1 a b c d e f g h i j k l m n o p q r s\r\n"],
  ["mg long key", `mg ${K251} v\r\n`],
  ["mg vivify", "mg viv N30 s t c\r\nmg viv N30 s t\r\nmg viv v\r\n"],
  ["mg recache", "set rc 0 100 1\r\nx\r\nmg rc R200 v\r\nmg rc R200 v\r\n"],
  ["mg base64 key", "mg Zm9v b v k\r\nmg !!! b v\r\n"],
  ["mg u and h", "set hh 0 0 1\r\nx\r\nmg hh h\r\nmg hh h u\r\nmg hh h\r\n"],
  ["mg duplicate", "mg mg1 k k\r\nmg mg1 \x80\r\n"],
  // ---- meta: ms
  ["ms basic", "ms ms1 2\r\nhi\r\nmg ms1 v\r\nms ms1 2 c k O1\r\nho\r\nms ms1 S2 T0\r\nhi\r\n"],
  ["ms flags", "ms ms2 3 F42 T100\r\nabc\r\nmg ms2 f t v\r\n"],
  ["ms modes", "ms ms3 1 ME\r\na\r\nms ms3 1 ME\r\nb\r\nms ms3 1 MA\r\nc\r\nms ms3 1 MP\r\nd\r\nms nosuch 1 MR\r\ne\r\nms nosuch 1 MA\r\ne\r\nmg ms3 v\r\n"],
  ["ms bad mode", "ms ms3 1 MX\r\na\r\nms ms3 1 Mab\r\na\r\n"],
  ["ms cas", "mg ms3 c\r\nms ms3 1 C1\r\nx\r\nms ms3 1 C0 q\r\ny\r\n"],
  ["ms q", "ms msq 1 q\r\na\r\nms msq 1 q ME\r\nb\r\nmg msq v\r\n"],
  ["ms errors", "ms\r\nms k\r\nms k abc\r\nms k -1\r\nms k 1 Z\r\nx\r\nms k 1 F-1\r\nx\r\n"],
  ["ms bad chunk", "ms k 1\r\nxyz\r\n"],
  ["ms too large", `ms bigm 1048576\r\n${big(1048576)}\r\n`],
  ["ms invalidate", "ms inv 1\r\na\r\nmd inv I T30\r\nmg inv v c\r\nmg inv v\r\nms inv 1 I C1\r\nb\r\nmg inv v\r\n"],
  ["ms base64", "ms Zm9vYmFy 2 b k\r\nzz\r\nmg Zm9vYmFy b v k\r\nmg foobar v\r\n"],
  ["ms long opaque", "ms k 1 O123456789012345678901234567890123\r\nx\r\n"],
  // ---- meta: md
  ["md", "set md1 0 0 1\r\nx\r\nmd md1\r\nmd md1\r\nmd md1 q\r\nmd md1 O5 k\r\n"],
  ["md q hit", "set md2 0 0 1\r\nx\r\nmd md2 q\r\nmg md2\r\n"],
  ["md cas", "set md3 0 0 1\r\nx\r\nmd md3 C1\r\nmg md3 c\r\n"],
  ["md errors", "md\r\nmd k k k\r\nmd k x\r\n"],
  // ---- meta: ma
  ["ma", "set ma1 0 0 1\r\n5\r\nma ma1\r\nma ma1 v\r\nma ma1 MD D2 v\r\nma ma1 M- D100 v\r\nma ma1 MI D10 v c t\r\n"],
  ["ma miss and vivify", "ma nosuch\r\nma nosuch q\r\nma viv2 N0 J13 v\r\nma viv2 N0 J13 v\r\n"],
  ["ma q", "set ma2 0 0 1\r\n1\r\nma ma2 q\r\nma ma2 q v\r\nmg ma2 v\r\n"],
  ["ma errors", "ma\r\nma ma1 MX\r\nma ma1 Dabc\r\nma ma1 Jx\r\nma ma1 D1 D1\r\n"],
  ["ma non-numeric", "set ma3 0 0 1\r\nx\r\nma ma3\r\n"],
  ["ma cas", "set ma4 0 0 1\r\n1\r\nma ma4 C1\r\n"],
  ["ma grow with T", "set ma5 0 0 1\r\n9\r\nma ma5 T100 t v\r\nmg ma5 t\r\n"],
  // ---- framing: many commands in one segment, noreply pipelines
  ["pipeline", "set p1 0 0 1 noreply\r\na\r\nset p2 0 0 1 noreply\r\nb\r\nget p1 p2\r\ndelete p1 noreply\r\nincr p2 1 noreply\r\nget p1 p2\r\n"],
  ["many in one", Array.from({ length: 200 }, (_, i) => `set m${i} 0 0 ${String(i).length}\r\n${i}\r\n`).join("") + "get m0 m50 m199\r\n"],
  // ---- garbage and closing
  ["binary garbage text", "\x01\x02\x03\xff\xfe\r\n"],
  ["HTTP request", "GET / HTTP/1.1\r\n", { noSentinel: true }],
  // What stock had already sent when a later command aborts the connection: everything before
  // its last send point (mn, every get, binary errors), other shards' answers included.
  ["sets, mn, then an abort", Array.from({ length: 6 }, (_, i) => `set ab${i} 0 0 1\r\nx\r\n`).join("") + "mn\r\nGET / HTTP/1.1\r\n", { noSentinel: true }],
  ["a get is a send point before an abort", "set ab9 0 0 1\r\nx\r\nget ab9\r\nGET / HTTP/1.1\r\n", { noSentinel: true }],
  ["a missing get is a send point too", "set ab8 0 0 1\r\nx\r\nget ab-none\r\nGET / HTTP/1.1\r\n", { noSentinel: true }],
  // Stock also transmits whenever it runs out of input: split into pieces, more was sent.
  ["a multiget with a too-long key drops the replies since the last send point", `set ab7 0 0 1\r\nx\r\ndelete ab7\r\nget ab7 ${"y".repeat(251)}\r\n`, { segmentSensitive: true }],
  // A reply not yet sent holds its item (mg, with or without v): stock's incr/decr/ma then writes
  // a new item of the new length instead of padding the old one in place. A send point (get,
  // mn, a multiget's too-long key dropping the replies) ends the hold.
  ["ma after mg in the same read writes a new item", "ms dh1 3\r\n100\r\nmg dh1 v\r\nma dh1 MD D99\r\nmg dh1 v s\r\n", { segmentSensitive: true }],
  ["mg without v holds the item too", "ms dh2 3\r\n100\r\nmg dh2 k\r\nma dh2 MD D99\r\nmg dh2 v s\r\n", { segmentSensitive: true }],
  ["decr after mg in the same read writes a new item", "set dh3 0 0 3\r\n100\r\nmg dh3\r\ndecr dh3 99\r\nget dh3\r\n", { segmentSensitive: true }],
  ["decr after get (a send point) pads in place", "set dh4 0 0 3\r\n100\r\nget dh4\r\ndecr dh4 99\r\nget dh4\r\n"],
  ["ma after mg and mn pads in place", "ms dh5 3\r\n100\r\nmg dh5 v\r\nmn\r\nma dh5 MD D99\r\nmg dh5 v s\r\n"],
  ["a multiget's too-long key ends the holds with the replies", `ms dh6 3\r\n100\r\nmg dh6 v\r\nget ${"y".repeat(251)}\r\nma dh6 MD D99\r\nmg dh6 v s\r\n`, { segmentSensitive: true }],
  ["ma and a missing mg hold nothing", "ms dh7 3\r\n100\r\nma dh7 MD D50 v\r\nma dh7 MD D49\r\nmg dh8 v\r\nma dh7 MD D1\r\nmg dh7 v s\r\n"],
  ["quit", "get foo\r\nquit\r\nget foo\r\n", { noSentinel: true }],
  ["quit extra", "quit now\r\n", { noSentinel: true }],
  ["long line closes", big(3000, "a"), { noSentinel: true, segmentSensitive: true }],
  ["half a command hangs", "get fo", { noSentinel: true }],
  ["set without data", "set hang 0 0 5\r\nab", { noSentinel: true }],
  // While a value is arriving stock sends nothing, not even the answers before it.
  ["answers wait for a value still arriving", "delete hang2\r\nset hang2 0 0 5\r\nab", { noSentinel: true, segmentSensitive: true }],
  ["a too-large value is answered once it was swallowed whole", "delete hang3\r\nset hang3 0 0 2000000\r\nab", { noSentinel: true, segmentSensitive: true }],
  ["flush_all", "flush_all\r\nget foo\r\nflush_all 0\r\nflush_all noreply\r\nflush_all 0 noreply\r\n"],
  ["flush_all delayed", "set late 0 0 1\r\nx\r\nflush_all 100\r\nget late\r\n"],
  ["after flush", "set fresh 0 0 1\r\nx\r\ngets fresh\r\n"],
];

/** Binary cases (a NOOP sentinel is appended). */
function binaryCases(): Case[] {
  const B = (name: string, ...packets: Uint8Array[]): Case => ({ name: `bin ${name}`, send: cat(...packets), binary: true });
  const set = (key: string, value: string, opts: { flags?: number; exp?: number; cas?: bigint; op?: number; opaque?: number } = {}) =>
    binRequest(opts.op ?? 0x01, { key, value, extras: setExtras(opts.flags ?? 0, opts.exp ?? 0), cas: opts.cas, opaque: opts.opaque });
  return [
    B("version", binRequest(0x0b, { opaque: 7 })),
    B("noop", binRequest(0x0a, { opaque: 0xdeadbeef })),
    B("set get", set("bk1", "hello", { flags: 9, opaque: 1 }), binRequest(0x00, { key: "bk1", opaque: 2 }), binRequest(0x0c, { key: "bk1" })),
    B("get miss", binRequest(0x00, { key: "bmiss", opaque: 3 }), binRequest(0x0c, { key: "bmiss" })),
    B("quiet gets", binRequest(0x09, { key: "bmiss" }), binRequest(0x09, { key: "bk1" }), binRequest(0x0d, { key: "bmiss" }), binRequest(0x0d, { key: "bk1" })),
    B("add replace", set("bk1", "x", { op: 0x02 }), set("bk2", "y", { op: 0x02 }), set("bk3", "z", { op: 0x03 }), set("bk2", "yy", { op: 0x03 })),
    B("quiet sets", set("bq", "1", { op: 0x11 }), set("bq", "2", { op: 0x12 }), set("bqq", "2", { op: 0x13 }), binRequest(0x00, { key: "bq" })),
    B("cas", set("bc", "v1"), set("bc", "v2", { cas: 1n }), set("bnone", "v", { cas: 5n }), binRequest(0x00, { key: "bc" })),
    B("cas match", binRequest(0x00, { key: "bc" })),
    B("delete", binRequest(0x04, { key: "bk2" }), binRequest(0x04, { key: "bk2" }), binRequest(0x14, { key: "bk1" }), binRequest(0x14, { key: "bk1" })),
    B("delete cas", set("bdc", "x"), binRequest(0x04, { key: "bdc", cas: 1n })),
    B("incr", binRequest(0x05, { key: "bn", extras: incrExtras(1n, 10n, 0) }), binRequest(0x05, { key: "bn", extras: incrExtras(5n, 0n, 0) }), binRequest(0x06, { key: "bn", extras: incrExtras(100n, 0n, 0) })),
    B("incr no create", binRequest(0x05, { key: "bn2", extras: incrExtras(1n, 10n, 0xffffffff) })),
    B("incr quiet", binRequest(0x15, { key: "bn", extras: incrExtras(1n, 0n, 0) }), binRequest(0x16, { key: "bn", extras: incrExtras(1n, 0n, 0) }), binRequest(0x00, { key: "bn" })),
    B("incr non numeric", set("bnn", "abc"), binRequest(0x05, { key: "bnn", extras: incrExtras(1n, 0n, 0) })),
    B("incr wrap", set("bw", "18446744073709551615"), binRequest(0x05, { key: "bw", extras: incrExtras(2n, 0n, 0) })),
    B("append prepend", set("bap", "mid"), binRequest(0x0e, { key: "bap", value: "END" }), binRequest(0x0f, { key: "bap", value: "BEG" }), binRequest(0x0e, { key: "bnone2", value: "x" }), binRequest(0x19, { key: "bap", value: "q" }), binRequest(0x00, { key: "bap" })),
    B("touch gat", binRequest(0x1c, { key: "bap", extras: u32Extras(100) }), binRequest(0x1c, { key: "bmiss", extras: u32Extras(100) }), binRequest(0x1d, { key: "bap", extras: u32Extras(0) }), binRequest(0x23, { key: "bap", extras: u32Extras(0) }), binRequest(0x1e, { key: "bmiss", extras: u32Extras(0) }), binRequest(0x24, { key: "bmiss", extras: u32Extras(0) })),
    // A get or touch reply not yet sent holds the item: a decr in the same read writes a new one.
    ...[0x00, 0x0d, 0x1c, 0x1e].map((op, i) => ({
      ...B(`get-like 0x${op.toString(16)} then decr in the same read`, set(`bdh${i}`, "100"), binRequest(op, { key: `bdh${i}`, extras: op >= 0x1c ? u32Extras(0) : undefined }), binRequest(0x06, { key: `bdh${i}`, extras: incrExtras(99n, 0n, 0) }), binRequest(0x00, { key: `bdh${i}` })),
      segmentSensitive: true,
    })),
    B("get, noop (a send point), decr pads in place", set("bdh9", "100"), binRequest(0x00, { key: "bdh9" }), binRequest(0x0a, {}), binRequest(0x06, { key: "bdh9", extras: incrExtras(99n, 0n, 0) }), binRequest(0x00, { key: "bdh9" })),
    { ...B("unknown opcode", binRequest(0x1b, { key: "x", value: "yy", opaque: 5 }), binRequest(0x50, {})), segmentSensitive: true },
    B("sasl", binRequest(0x20, {}), binRequest(0x21, { key: "PLAIN", value: "abc" })),
    B("too large", set("btl", big(1048577)), binRequest(0x00, { key: "btl" })),
    B("stat unknown", binRequest(0x10, { key: "nonsense" })),
    B("stat reset", binRequest(0x10, { key: "reset" })),
    B("flush", binRequest(0x08, {}), binRequest(0x00, { key: "bap" }), binRequest(0x18, { extras: u32Extras(0) })),
    { name: "bin protocol error closes", send: cat(binRequest(0x00, { key: "", opaque: 9 }), binRequest(0x0a, {})), binary: true, noSentinel: true },
    { name: "bin key too long", send: binRequest(0x00, { key: K251 }), binary: true, noSentinel: true },
    { name: "bin bad magic", send: cat(binRequest(0x0a, {}), binRequest(0x0a, { magic: 0x81 })), binary: true, noSentinel: true },
    {
      name: "bin a too-large value is answered once it was swallowed whole",
      send: binRequest(0x01, { key: "btl2", value: "x".repeat(100), extras: setExtras(0, 0), bodylen: 2_000_009 }),
      binary: true,
      noSentinel: true,
    },
    {
      // mf0 and mf1 live on different shards: with 2 shards one delete misses on another shard.
      // A binary error is a send point: stock sends the Not found before closing.
      name: "bin a delete that misses, a set, then bad magic: the error answer is sent",
      send: cat(binRequest(0x04, { key: "mf0" }), set("mf0", "x"), binRequest(0x04, { key: "mf1x" }), binRequest(0x04, { key: "mf1" }), set("mf1", "x"), binRequest(0x0a, { magic: 0x41 })),
      binary: true,
      noSentinel: true,
      segmentSensitive: true,
    },
    {
      name: "bin sets, noop, then bad magic",
      send: cat(...Array.from({ length: 6 }, (_, i) => set(`bab${i}`, "x")), binRequest(0x0a, {}), binRequest(0x0a, { magic: 0x99 })),
      binary: true,
      noSentinel: true,
    },
    {
      name: "bin an error reply is a send point before bad magic",
      send: cat(set("bab9", "x"), binRequest(0x00, { key: "bab-none" }), binRequest(0x0a, { magic: 0x99 })),
      binary: true,
      noSentinel: true,
    },
    { name: "bin keylen > bodylen", send: binRequest(0x00, { key: "abc", bodylen: 1 }), binary: true, noSentinel: true },
    // Stock reads the key before it checks the lengths: the header alone gets no answer yet.
    { name: "bin keylen 65535 > bodylen, the header alone", send: binRequest(0x00, { keylen: 0xffff, bodylen: 1 }), binary: true, noSentinel: true },
    { name: "bin quit", send: cat(binRequest(0x07, { opaque: 4 }), binRequest(0x0a, {})), binary: true, noSentinel: true },
    { name: "bin quitq", send: cat(binRequest(0x17, {}), binRequest(0x0a, {})), binary: true, noSentinel: true },
    { name: "bin set bad extlen", send: binRequest(0x01, { key: "x", value: "y", extras: new Uint8Array(4) }), binary: true, noSentinel: true },
  ];
}

/** Every case, in order. */
export function allCases(): Case[] {
  const cases: Case[] = text.map(([name, s, extra]) => ({ name, send: b(s), ...extra }));
  for (const c of cases) if (EXACT_CAS.has(c.name)) c.exactCas = true;
  const bin = binaryCases();
  for (const c of bin) if (c.name === "bin cas" || c.name === "bin cas match" || c.name === "bin delete cas") c.exactCas = true;
  return [...cases, ...bin];
}

/** Cases that send CAS values they expect stock's counter to have produced. */
const EXACT_CAS = new Set(["cas match", "cas noreply", "ms cas", "md cas", "ma cas", "ms invalidate", "cas flow"]);

/**
 * Masks what legitimately differs with several shards: CAS values (each shard counts its own)
 * in VALUE lines, meta `c` return flags, `me` output and binary headers.
 */
export function maskCas(bytes: Uint8Array, binary: boolean): string {
  if (binary) {
    const copy = bytes.slice();
    let p = 0;
    while (copy.length - p >= 24) {
      const bodylen = (copy[p + 8]! << 24) | (copy[p + 9]! << 16) | (copy[p + 10]! << 8) | copy[p + 11]!;
      copy.fill(0, p + 16, p + 24);
      p += 24 + bodylen;
    }
    return Array.from(copy, (c) => String.fromCharCode(c)).join("");
  }
  const text = Array.from(bytes, (c) => String.fromCharCode(c)).join("");
  return text
    .replace(/^(VALUE \S+ \d+ \d+) \d+\r$/gm, "$1 CAS\r")
    .replace(/^((?:HD|VA|EX|NF|NS|EN)\b[^\r\n]*?) c\d+/gm, "$1 cCAS")
    .replace(/cas=\d+/g, "cas=CAS");
}

/** The text sentinel and its answer. */
export const TEXT_SENTINEL = b("mn\r\n");
export const TEXT_SENTINEL_ANSWER = b("MN\r\n");
/** The binary sentinel (NOOP, opaque 0x5e5e5e5e) and its answer. */
export const BIN_SENTINEL = binRequest(0x0a, { opaque: 0x5e5e5e5e });
export const BIN_SENTINEL_ANSWER = (() => {
  const r = new Uint8Array(24);
  r[0] = 0x81;
  r[1] = 0x0a;
  r.set([0x5e, 0x5e, 0x5e, 0x5e], 12);
  return r;
})();
