/**
 * The shape of a shared-memory session segment (shm / inproc): its ring size and slab size
 * classes, chosen by the connecting side (`connect(url, { segment })`). Declared here, in the
 * segment layer, and added to the contract's ConnectOptions by module augmentation, so the
 * contract imports nothing from the transports below it.
 */

/** One slab size class of a shared-memory session segment. */
export interface SizeClass {
  slotBytes: number;
  slotCount: number;
}

/** The shape of a shared-memory session segment (shm / inproc), chosen by the connecting side. */
export interface SegmentConfig {
  /** Descriptors per ring (a power of two): the most messages in flight one way. */
  ringSlots: number;
  /** Slab size classes per direction, smallest first. The largest bounds maxMessageBytes. */
  sizeClasses: SizeClass[];
}

declare module "../contract/transport.ts" {
  interface ConnectOptions {
    /** shm / inproc: the session segment's shape (ring size, slab size classes). Others ignore it. */
    segment?: Partial<SegmentConfig>;
  }
}
