/**
 * The fs layer's public API: DMA files, directory utilities, the I/O scheduler, file streams
 * and the io-properties format. Re-exported by src/index.ts.
 */
export { DmaFile, openFileDma, dmaBufferPool, alignUp, alignDown } from "./dma-file.ts";
export type { OpenFlags, OpenFlagsObject, OpenFileOptions, DmaIoOptions, DmaReadOptions } from "./dma-file.ts";
export type { FileStat, FileType } from "./stat.ts";
export type { FsInfo } from "./fs-info.ts";
export {
  listDirectory, mkdir, remove, removeTree, rename, link, stat, fileExists, fileSize, fsSpace, withTempDir,
} from "./directory.ts";
export type { DirectoryEntry } from "./directory.ts";
export { IoQueue, IoScheduler, ioScheduler, configureIoScheduler, resetIoScheduler } from "./io-scheduler.ts";
export type { IoSchedulerOptions, IoQueueStats, IoClassStats } from "./io-scheduler.ts";
export { parseIoProperties, formatIoProperties, checkDiskProperties } from "./io-properties.ts";
export type { DiskProperties } from "./io-properties.ts";
export { FileInputStream, FileOutputStream, makeFileInputStream, makeFileOutputStream } from "./streams.ts";
export type { FileInputStreamOptions, FileOutputStreamOptions } from "./streams.ts";
export { readSmallFile, writeSmallFile } from "./small-file.ts";
export { iotune, mountPointOf } from "./iotune.ts";
export type { IotuneOptions, IotuneResult } from "./iotune.ts";
