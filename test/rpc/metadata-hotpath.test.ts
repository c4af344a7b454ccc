/**
 * The hot-path server (Server.recv(), no onRequest) never hands out a request whose metadata is
 * malformed: the peer's connection is aborted with ProtocolError and recv() stays empty. A raw
 * peer over a real shm connection sends the frame (a metadata prefix naming 9 bytes of
 * metadata, 2 there).
 */
import { expect, test } from "bun:test";
import { Server, ProtocolError, connect, listen } from "../../src/index.ts";
import { KIND_FLAG_METADATA, KIND_REQUEST, WIRE_HEADER_BYTES, withMetadata, writeWireHeader } from "../../src/rpc/wire.ts";

test("hot path recv(): a request with malformed metadata is never received; its connection ends with ProtocolError", async () => {
  const listener = await listen(`shm://md-hot-${process.pid}`);
  const closes: unknown[] = [];
  const server = new Server({ onSessionClose: (_s, e) => closes.push(e), onError: () => {} });
  server.attach(listener);
  const raw = await connect(listener.url);
  try {
    raw.setReceiver({ onMessage: (m) => m.release(), onClose: () => {} });
    const body = withMetadata(new Uint8Array([9, 0]), new Uint8Array([1, 2]));
    const head = new Uint8Array(WIRE_HEADER_BYTES);
    writeWireHeader(head, KIND_REQUEST | KIND_FLAG_METADATA, 1, 0, 1, 0, body.length);
    raw.trySend(head, body);
    for (let i = 0; i < 1000 && closes.length === 0; i++) {
      server.poll();
      await Bun.sleep(2);
    }
    expect(closes[0]).toBeInstanceOf(ProtocolError);
    expect(String(closes[0])).toContain("malformed metadata");
    expect(server.recv()).toBeNull();
  } finally {
    raw.close();
    server.close();
  }
});
