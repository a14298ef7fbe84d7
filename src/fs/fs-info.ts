/**
 * statfs/fstatfs through the native layer (io_uring has no such operation; the call reads
 * in-memory superblock counters and does not wait for the device).
 */
import { native } from "../core/native.ts";
import { SystemError } from "../core/errors.ts";
import { encodePathInto, syncBuffers } from "./scratch.ts";
import { fsName } from "./constants.ts";

/** What statfs says about a file system. Byte counts are exact below 2^53. */
export interface FsInfo {
  /** The file system's name ("ext4", "tmpfs"...) and its statfs magic number. */
  fileSystem: string;
  magic: number;
  /** Preferred I/O size. */
  blockSize: number;
  totalBytes: number;
  freeBytes: number;
  /** Free bytes an unprivileged user may take (free minus the root reserve). */
  availableBytes: number;
  files: number;
  freeFiles: number;
  readOnly: boolean;
}

function decode(info: Float64Array): FsInfo {
  const frag = info[2]!;
  return {
    magic: info[0]!,
    fileSystem: fsName(info[0]!),
    blockSize: info[1]!,
    totalBytes: info[3]! * frag,
    freeBytes: info[4]! * frag,
    availableBytes: info[5]! * frag,
    files: info[6]!,
    freeFiles: info[7]!,
    readOnly: (info[9]! & 1) !== 0,
  };
}

function view(): Float64Array {
  const b = syncBuffers().info;
  return new Float64Array(b.bytes.buffer, b.bytes.byteOffset, 10);
}

/** @internal fstatfs(fd), synchronous. Throws SystemError. */
export function readFsInfo(fd: number): FsInfo {
  const b = syncBuffers().info;
  const rc = native().shoal_fs_fstatfs(fd, b.address);
  if (rc < 0) throw new SystemError("fstatfs", -rc);
  return decode(view());
}

/** @internal statfs(path), synchronous; the path must have passed checkPath. Throws SystemError. */
export function readFsInfoAt(op: string, path: string): FsInfo {
  const { path: p, info } = syncBuffers();
  encodePathInto(path, p);
  const rc = native().shoal_fs_statfs(p.address, info.address);
  if (rc < 0) throw new SystemError(op, -rc, path);
  return decode(view());
}
