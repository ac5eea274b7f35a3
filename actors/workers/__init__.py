"""Worker processes: the data plane on every core, one whole pipeline per process.

The parent (:mod:`.pool`, a :class:`actors.dataplane.DataPlane`) opens and keeps every kernel
object, holds the one UAPI socket and the configuration's model, and supervises the workers;
each worker (:mod:`.worker`) runs the actor pipeline on its own TUN queue, its own member of the
UDP port's reuseport group and its own hand-over inbox, for the peers it owns (:mod:`.shard`).
What crosses between them is immutable values (:mod:`.messages`) over a local channel
(:mod:`.channel`); how a `wg set` is shared out is a pure function (:mod:`.model`).
"""
