/**
 * kv snapshot files: every entry (key, value, version) written atomically, and read back only
 * after the whole file has been verified. All integers little-endian.
 *
 *   header (40 B): +0 "HPKVSNAP" (8 bytes)  +8 u32 formatVersion 2  +12 u32 headerBytes 40
 *                  +16 u64 recordCount  +24 u64 nextVersion (the store's version counter: the
 *                  version its next write would get)  +32 u32 crc32(header[0..32))  +36 u32 zero
 *   records:       +0 u64 version  +8 u32 keyLen  +12 u32 valueLen
 *                  +16 u32 crc32(record[0..16) ++ key ++ value)  +20 u32 zero  +24 key, value
 *   trailer (8 B): +0 "HPKE" (u32 0x454b5048)  +4 u32 crc32 of every byte before it
 *
 * Contract: writeSnapshot writes a temp file in the target's directory (0600, O_EXCL), fsyncs
 * it, renames it over the target and fsyncs the directory: a reader (or a crash) sees the old
 * file or the new one, never a mix. On failure the temp file is removed, the old file is left as
 * it was, and KvSnapshotError says what failed. A save killed mid-write (kill -9, a crash) leaves
its temp file; the next writeSnapshot or readSnapshot of that path removes temp files whose
process is gone (removeStaleTemps). readSnapshot reads the whole file and checks
 * magic, format version, header crc, every record's lengths and crc, the record count, the
 * trailer and its checksum over the file before returning anything; every problem is a
 * KvSnapshotError naming the path and what is wrong.
 * The counter is kept so that a restarted store never hands out a version it handed out before
 * (a deleted key's, say). Format 1 files (32-byte header, no counter) are still read: their
 * nextVersion is reported as 0 (unknown), and the store falls back to the largest loaded
 * version + 1, which can repeat a version of a key deleted before that save.
 *
 * Example:
 *   writeSnapshot(path, n, nextVersion, (emit) => emit(key, value, version));
 *   const { records, nextVersion } = readSnapshot(path);
 *
 * Thread: any (synchronous file I/O; blocks the calling thread for the file's size).
 */

import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { describeThrown, KvSnapshotError } from "../errors.ts";
import { processExists } from "../segment/socket-dir.ts";
import { getU64, setU64 } from "./layout.ts";

const MAGIC = new TextEncoder().encode("HPKVSNAP");
export const SNAPSHOT_FORMAT_VERSION = 2;
const HEADER_BYTES = 40;
/** Format 1: the same file without the counter (header of 32 bytes, its crc at +24). */
const V1_HEADER_BYTES = 32;
const RECORD_HEADER_BYTES = 24;
const TRAILER_MAGIC = 0x454b5048;
const TRAILER_BYTES = 8;
/** Writes go out in chunks of this size: big enough for few syscalls, small next to the arena. */
const WRITE_CHUNK_BYTES = 1 << 20;

/** One entry read back from a snapshot; key and value are views into the file's bytes. */
export interface SnapshotRecord {
  key: Uint8Array;
  value: Uint8Array;
  version: number;
}

/** A verified snapshot: its records and the counter it was saved with (0: a format 1 file, unknown). */
export interface Snapshot {
  records: SnapshotRecord[];
  nextVersion: number;
}

/**
 * Writes a snapshot of `count` entries and the store's `nextVersion` to `path` atomically;
 * `each(emit)` must call emit exactly `count` times (the bytes are copied during the call).
 * KvSnapshotError on any failure.
 */
export function writeSnapshot(path: string, count: number, nextVersion: number, each: (emit: (key: Uint8Array, value: Uint8Array, version: number) => void) => void): void {
  const dir = dirname(path);
  removeStaleTemps(path);
  const tmp = tempName(path);
  let fd = -1;
  try {
    fd = openSync(tmp, "wx", 0o600);
    const buf = new Uint8Array(WRITE_CHUNK_BYTES);
    const view = new DataView(buf.buffer);
    let used = 0;
    let crc = 0;
    const flush = () => {
      if (used === 0) return;
      crc = Bun.hash.crc32(buf.subarray(0, used), crc) >>> 0;
      let done = 0;
      while (done < used) done += writeSync(fd, buf, done, used - done);
      used = 0;
    };
    const put = (bytes: Uint8Array) => {
      let at = 0;
      while (at < bytes.byteLength) {
        if (used === WRITE_CHUNK_BYTES) flush();
        const n = Math.min(bytes.byteLength - at, WRITE_CHUNK_BYTES - used);
        buf.set(bytes.subarray(at, at + n), used);
        used += n;
        at += n;
      }
    };
    const room = (n: number) => {
      if (WRITE_CHUNK_BYTES - used < n) flush();
    };
    room(HEADER_BYTES);
    buf.fill(0, used, used + HEADER_BYTES);
    buf.set(MAGIC, used);
    view.setUint32(used + 8, SNAPSHOT_FORMAT_VERSION, true);
    view.setUint32(used + 12, HEADER_BYTES, true);
    setU64(view, used + 16, count);
    setU64(view, used + 24, nextVersion);
    view.setUint32(used + 32, Bun.hash.crc32(buf.subarray(used, used + 32)) >>> 0, true);
    used += HEADER_BYTES;
    let emitted = 0;
    each((key, value, version) => {
      emitted++;
      room(RECORD_HEADER_BYTES);
      const h = used;
      setU64(view, h, version);
      view.setUint32(h + 8, key.byteLength, true);
      view.setUint32(h + 12, value.byteLength, true);
      const c = Bun.hash.crc32(value, Bun.hash.crc32(key, Bun.hash.crc32(buf.subarray(h, h + 16))));
      view.setUint32(h + 16, c >>> 0, true);
      view.setUint32(h + 20, 0, true);
      used += RECORD_HEADER_BYTES;
      put(key);
      put(value);
    });
    if (emitted !== count) throw new Error(`${emitted} entries emitted, ${count} announced`);
    room(TRAILER_BYTES);
    view.setUint32(used, TRAILER_MAGIC, true);
    used += 4;
    crc = Bun.hash.crc32(buf.subarray(0, used), crc) >>> 0;
    view.setUint32(used, crc, true);
    used += 4;
    let done = 0;
    while (done < used) done += writeSync(fd, buf, done, used - done);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
    const dirFd = openSync(dir, "r");
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // not created, or already renamed
    }
    throw new KvSnapshotError(`kv snapshot ${path}: cannot write it: ${describeThrown(e)}`, { cause: e });
  }
}

/** A temp file name for a snapshot of `path`: `.NAME.tmp-PID-RAND` in the same directory. */
function tempName(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${(Math.random() * 0x100000000) >>> 0}`);
}

/**
 * Removes the temp files a save of `path` left behind when its process died mid-write
 * (`.NAME.tmp-PID-RAND` whose PID is not running); returns their names. Files of live
 * processes (a save in progress) and anything else in the directory are left alone; an
 * unreadable directory or a file that cannot be removed is skipped (best effort). Called by
 * writeSnapshot and readSnapshot, so a crash costs disk space only until the next save or load.
 */
export function removeStaleTemps(path: string): string[] {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.tmp-`;
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)-\d+$/.exec(name.slice(prefix.length));
    if (m === null) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processExists(pid)) continue;
    try {
      unlinkSync(join(dir, name));
      removed.push(name);
    } catch {
      // gone already, or not ours to remove
    }
  }
  return removed;
}

/**
 * Checks that a snapshot of `path` can be written: creates and removes a temp file in its
 * directory (as writeSnapshot would). KvSnapshotError naming the path and the reason when the
 * directory does not exist or is not writable.
 */
export function probeSnapshotPath(path: string): void {
  const tmp = tempName(path);
  try {
    closeSync(openSync(tmp, "wx", 0o600));
    unlinkSync(tmp);
  } catch (e) {
    throw new KvSnapshotError(`kv snapshot ${path}: cannot write a snapshot there: ${describeThrown(e)}`, { cause: e });
  }
}

/** Every record of the snapshot at `path`, after the whole file has been verified; see the module comment. */
export function readSnapshot(path: string): Snapshot {
  removeStaleTemps(path);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(path));
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new KvSnapshotError(`kv snapshot ${path}: cannot read it: ${code === "ENOENT" ? "no such file" : describeThrown(e)}`, { cause: e });
  }
  const bad = (what: string) => new KvSnapshotError(`kv snapshot ${path}: ${what}`);
  const len = bytes.byteLength;
  if (len < V1_HEADER_BYTES + TRAILER_BYTES) throw bad(`truncated: ${len} bytes, a snapshot has at least ${V1_HEADER_BYTES + TRAILER_BYTES}`);
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) throw bad("not a kv snapshot (wrong magic)");
  const v = new DataView(bytes.buffer, bytes.byteOffset, len);
  const format = v.getUint32(8, true);
  if (format !== SNAPSHOT_FORMAT_VERSION && format !== 1) throw bad(`format version ${format}, this build reads 1 and ${SNAPSHOT_FORMAT_VERSION}`);
  const headerBytes = format === 1 ? V1_HEADER_BYTES : HEADER_BYTES;
  if (len < headerBytes + TRAILER_BYTES) throw bad(`truncated: ${len} bytes, a format ${format} snapshot has at least ${headerBytes + TRAILER_BYTES}`);
  const crcAt = headerBytes - 8;
  if ((Bun.hash.crc32(bytes.subarray(0, crcAt)) >>> 0) !== v.getUint32(crcAt, true) || v.getUint32(12, true) !== headerBytes) throw bad("header checksum mismatch (corrupt header)");
  const count = getU64(v, 16);
  const nextVersion = format === 1 ? 0 : getU64(v, 24);
  if (format !== 1 && (nextVersion < 1 || !Number.isSafeInteger(nextVersion))) throw bad(`the version counter ${nextVersion} is out of range`);
  const end = len - TRAILER_BYTES;
  const records: SnapshotRecord[] = [];
  let at = headerBytes;
  for (let i = 0; i < count; i++) {
    if (at + RECORD_HEADER_BYTES > end) throw bad(`truncated: record ${i} of ${count} starts at byte ${at} of ${len}`);
    const keyLen = v.getUint32(at + 8, true);
    const valueLen = v.getUint32(at + 12, true);
    const next = at + RECORD_HEADER_BYTES + keyLen + valueLen;
    if (next > end) throw bad(`truncated: record ${i} of ${count} (key ${keyLen} bytes, value ${valueLen} bytes) runs past the end of the ${len}-byte file`);
    const c = Bun.hash.crc32(bytes.subarray(at + RECORD_HEADER_BYTES, next), Bun.hash.crc32(bytes.subarray(at, at + 16))) >>> 0;
    if (c !== v.getUint32(at + 16, true)) throw bad(`record ${i} of ${count} at byte ${at}: checksum mismatch (corrupt)`);
    const version = getU64(v, at);
    if (version < 1 || !Number.isSafeInteger(version)) throw bad(`record ${i} of ${count}: version ${version} is out of range`);
    if (format !== 1 && version >= nextVersion) throw bad(`record ${i} of ${count}: version ${version} is not below the saved counter ${nextVersion}`);
    records.push({ key: bytes.subarray(at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + keyLen), value: bytes.subarray(at + RECORD_HEADER_BYTES + keyLen, next), version });
    at = next;
  }
  if (at !== end) throw bad(at < end ? `${end - at} bytes after the last of ${count} records (corrupt or wrong length)` : "truncated");
  if (v.getUint32(end, true) !== TRAILER_MAGIC) throw bad("truncated or corrupt: no trailer after the last record");
  if ((Bun.hash.crc32(bytes.subarray(0, end + 4)) >>> 0) !== v.getUint32(end + 4, true)) throw bad("file checksum mismatch (corrupt)");
  return { records, nextVersion };
}
