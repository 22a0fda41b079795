-- RoomKit schema, version 1 (SQLite). Kept table-for-table and
-- column-for-column in step with the PostgreSQL version.
--
-- Every row keeps its full object as JSON in `data`; the other columns are
-- what queries filter, order or count on. A room's counters live only in
-- columns, so committing an event moves them in the same statement that
-- proves the index free.

CREATE TABLE rooms (
    id               TEXT    NOT NULL PRIMARY KEY,
    organization_id  TEXT,
    status           TEXT    NOT NULL,
    created_ns       INTEGER NOT NULL,
    timed            INTEGER NOT NULL DEFAULT 0,
    event_count      INTEGER NOT NULL DEFAULT 0,
    latest_index     INTEGER,
    last_activity_ns INTEGER,
    data             TEXT    NOT NULL
);
CREATE INDEX rooms_by_org ON rooms (organization_id, id);
CREATE INDEX rooms_by_created ON rooms (created_ns, id);
CREATE INDEX rooms_timed ON rooms (id) WHERE timed = 1;

CREATE TABLE events (
    id                TEXT    NOT NULL PRIMARY KEY,
    room_id           TEXT    NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    idx               INTEGER NOT NULL,
    idempotency_key   TEXT,
    source_channel_id TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    visibility        TEXT    NOT NULL,
    data              TEXT    NOT NULL,
    CONSTRAINT events_room_idx UNIQUE (room_id, idx),
    CONSTRAINT events_room_idempotency_key UNIQUE (room_id, idempotency_key)
);

CREATE TABLE bindings (
    seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    room_id    TEXT    NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    channel_id TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    CONSTRAINT bindings_room_channel UNIQUE (room_id, channel_id)
);
CREATE INDEX bindings_by_channel ON bindings (channel_id);

CREATE TABLE participants (
    seq          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    room_id      TEXT    NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    id           TEXT    NOT NULL,
    channel_type TEXT,
    address      TEXT,
    data         TEXT    NOT NULL,
    CONSTRAINT participants_room_id UNIQUE (room_id, id)
);
CREATE INDEX participants_by_address ON participants (channel_type, address);

CREATE TABLE identities (
    id              TEXT NOT NULL PRIMARY KEY,
    organization_id TEXT,
    data            TEXT NOT NULL
);

CREATE TABLE identity_addresses (
    identity_id     TEXT NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    channel_type    TEXT NOT NULL,
    address         TEXT NOT NULL,
    organization_id TEXT
);
CREATE INDEX identity_addresses_by_address ON identity_addresses (channel_type, address);
CREATE INDEX identity_addresses_by_identity ON identity_addresses (identity_id);

CREATE TABLE tasks (
    seq     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id      TEXT    NOT NULL,
    room_id TEXT    NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    status  TEXT    NOT NULL,
    data    TEXT    NOT NULL,
    CONSTRAINT tasks_id UNIQUE (id)
);
CREATE INDEX tasks_by_room ON tasks (room_id, seq);

CREATE TABLE observations (
    seq     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    room_id TEXT    NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    data    TEXT    NOT NULL
);
CREATE INDEX observations_by_room ON observations (room_id, seq);
