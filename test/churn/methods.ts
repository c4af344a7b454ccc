/** The churn service's method ids (churn-server.ts serves them, churn-client.ts calls them). */

/** Replies with the request's bytes, synchronously. */
export const M_ECHO = 1;
/** Replies with the request's bytes after the delay (ms) in its first 4 bytes (u32 LE). */
export const M_SLOW_ECHO = 2;
