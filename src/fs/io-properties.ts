/**
 * The io-properties file: what a disk can do, in Seastar's `--io-properties-file` format
 * (written by `iotune`, read by configureIoScheduler):
 *
 *   disks:
 *     - mountpoint: /var/lib/data
 *       read_iops: 138000          # 4 KiB random reads per second
 *       read_bandwidth: 1642000000 # bytes per second, large sequential reads
 *       write_iops: 61000
 *       write_bandwidth: 1930000000
 */
import { InvalidArgumentError } from "../core/errors.ts";

/** One disk's capacity. Bandwidths are bytes per second; IOPS are 4 KiB requests per second. */
export interface DiskProperties {
  /** A directory on the disk's file system; files under its mount share one I/O queue. */
  mountpoint: string;
  readIops: number;
  readBandwidth: number;
  writeIops: number;
  writeBandwidth: number;
}

const keys = [
  ["read_iops", "readIops"],
  ["read_bandwidth", "readBandwidth"],
  ["write_iops", "writeIops"],
  ["write_bandwidth", "writeBandwidth"],
] as const;

/**
 * Parses an io-properties document (YAML as iotune writes it, or the equivalent JSON).
 * Unknown keys are ignored, as Seastar ignores the saturation lengths it does not use.
 * Cost: one YAML parse. Throws InvalidArgumentError naming the first bad field.
 */
export function parseIoProperties(text: string, source = "io-properties"): DiskProperties[] {
  if (typeof text !== "string") throw new InvalidArgumentError(`${source}: expected the file's text`);
  let doc: unknown;
  try {
    doc = Bun.YAML.parse(text);
  } catch (cause) {
    throw new InvalidArgumentError(`${source}: not valid YAML: ${(cause as Error).message}`, { cause });
  }
  const disks = (doc as { disks?: unknown } | null)?.disks;
  if (!Array.isArray(disks) || disks.length === 0) {
    throw new InvalidArgumentError(`${source}: expected a non-empty "disks:" list`);
  }
  return disks.map((d, i) => {
    const where = `${source}: disks[${i}]`;
    if (d === null || typeof d !== "object") throw new InvalidArgumentError(`${where} must be a mapping`);
    const rec = d as Record<string, unknown>;
    if (typeof rec["mountpoint"] !== "string" || !rec["mountpoint"].startsWith("/")) {
      throw new InvalidArgumentError(`${where}.mountpoint must be an absolute path`);
    }
    const out: DiskProperties = { mountpoint: rec["mountpoint"], readIops: 0, readBandwidth: 0, writeIops: 0, writeBandwidth: 0 };
    for (const [yamlKey, field] of keys) {
      const v = rec[yamlKey];
      if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
        throw new InvalidArgumentError(`${where}.${yamlKey} must be a positive number, got ${JSON.stringify(v)}`);
      }
      out[field] = v;
    }
    return out;
  });
}

/**
 * Checks DiskProperties given as objects (configureIoScheduler accepts them directly).
 * Throws InvalidArgumentError naming the first bad field.
 */
export function checkDiskProperties(disks: unknown, source = "properties"): DiskProperties[] {
  if (!Array.isArray(disks) || disks.length === 0) throw new InvalidArgumentError(`${source}: expected a non-empty array of DiskProperties`);
  return disks.map((d, i) => {
    const where = `${source}[${i}]`;
    if (d === null || typeof d !== "object") throw new InvalidArgumentError(`${where} must be an object`);
    const rec = d as Record<string, unknown>;
    if (typeof rec["mountpoint"] !== "string" || !rec["mountpoint"].startsWith("/")) {
      throw new InvalidArgumentError(`${where}.mountpoint must be an absolute path`);
    }
    for (const [, field] of keys) {
      const v = rec[field];
      if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
        throw new InvalidArgumentError(`${where}.${field} must be a positive number, got ${JSON.stringify(v)}`);
      }
    }
    const p = d as DiskProperties;
    return { mountpoint: p.mountpoint, readIops: p.readIops, readBandwidth: p.readBandwidth, writeIops: p.writeIops, writeBandwidth: p.writeBandwidth };
  });
}

/** Formats disks as an io-properties document (the inverse of parseIoProperties). */
export function formatIoProperties(disks: readonly DiskProperties[]): string {
  const lines = ["disks:"];
  for (const d of checkDiskProperties(disks, "formatIoProperties")) {
    // Plain paths stay unquoted as iotune writes them; anything YAML could misread is quoted.
    const mp = /^[\w/.+@-]+$/.test(d.mountpoint) ? d.mountpoint : JSON.stringify(d.mountpoint);
    lines.push(`  - mountpoint: ${mp}`);
    for (const [yamlKey, field] of keys) lines.push(`    ${yamlKey}: ${Math.round(d[field])}`);
  }
  return lines.join("\n") + "\n";
}
