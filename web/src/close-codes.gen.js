// @ts-check
// Generated from crates/proto/src/session.rs (close::ALL) by its tests;
// regenerate with `EVALD_UPDATE_GENERATED=1 cargo test -p evald-proto`. Do not edit.

/** The session WebSocket's close codes. */
export const CLOSE = Object.freeze({
  NORMAL: 1000,
  BAD_MESSAGE: 4400,
  NOT_FOUND: 4404,
  IDLE: 4408,
  LIFETIME: 4409,
  MOVED: 4410,
  TOO_MANY: 4429,
  SHUTDOWN: 4503,
});

/** What each close code means, for messages to the user. */
export const CLOSE_MEANINGS = Object.freeze({
  1000: "closed",
  4400: "malformed message",
  4404: "session not found (or expired)",
  4408: "idle timeout",
  4409: "the session reached its maximum lifetime",
  4410: "the session moved to another node; reconnect",
  4429: "too many sessions or clients on this node",
  4503: "the node is shutting down or draining",
});
