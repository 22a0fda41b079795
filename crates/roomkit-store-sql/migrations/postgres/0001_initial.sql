-- RoomKit schema, version 1 (PostgreSQL). Kept table-for-table and
-- column-for-column in step with the SQLite version. Ids compare bytewise
-- (COLLATE "C"), as they do in SQLite and in the in-memory store.
--
-- Every row keeps its full object as JSON in `data`; the other columns are
-- what queries filter, order or count on. A room's counters live only in
-- columns, so committing an event moves them in the same statement that
-- proves the index free.

CREATE TABLE rooms (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    organization_id  TEXT,
    status           TEXT    NOT NULL,
    created_ns       BIGINT  NOT NULL,
    timed            BIGINT  NOT NULL DEFAULT 0,
    event_count      BIGINT  NOT NULL DEFAULT 0,
    latest_index     BIGINT,
    last_activity_ns BIGINT,
    data             TEXT    NOT NULL
);
CREATE INDEX rooms_by_org ON rooms (organization_id, id);
CREATE INDEX rooms_by_created ON rooms (created_ns, id);
CREATE INDEX rooms_timed ON rooms (id) WHERE timed = 1;

CREATE TABLE events (
    id                TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    room_id           TEXT COLLATE "C" NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    idx               BIGINT  NOT NULL,
    idempotency_key   TEXT,
    source_channel_id TEXT COLLATE "C" NOT NULL,
    status            TEXT    NOT NULL,
    visibility        TEXT    NOT NULL,
    data              TEXT    NOT NULL,
    CONSTRAINT events_room_idx UNIQUE (room_id, idx),
    CONSTRAINT events_room_idempotency_key UNIQUE (room_id, idempotency_key)
);

CREATE TABLE bindings (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id    TEXT COLLATE "C" NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    channel_id TEXT COLLATE "C" NOT NULL,
    data       TEXT    NOT NULL,
    CONSTRAINT bindings_room_channel UNIQUE (room_id, channel_id)
);
CREATE INDEX bindings_by_channel ON bindings (channel_id);

CREATE TABLE participants (
    seq          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id      TEXT COLLATE "C" NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    id           TEXT COLLATE "C" NOT NULL,
    channel_type TEXT,
    address      TEXT,
    data         TEXT    NOT NULL,
    CONSTRAINT participants_room_id UNIQUE (room_id, id)
);
CREATE INDEX participants_by_address ON participants (channel_type, address);

CREATE TABLE identities (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    organization_id TEXT,
    data            TEXT NOT NULL
);

CREATE TABLE identity_addresses (
    identity_id     TEXT COLLATE "C" NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    channel_type    TEXT NOT NULL,
    address         TEXT NOT NULL,
    organization_id TEXT
);
CREATE INDEX identity_addresses_by_address ON identity_addresses (channel_type, address);
CREATE INDEX identity_addresses_by_identity ON identity_addresses (identity_id);

CREATE TABLE tasks (
    seq     BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id      TEXT COLLATE "C" NOT NULL,
    room_id TEXT COLLATE "C" NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    status  TEXT    NOT NULL,
    data    TEXT    NOT NULL,
    CONSTRAINT tasks_id UNIQUE (id)
);
CREATE INDEX tasks_by_room ON tasks (room_id, seq);

CREATE TABLE observations (
    seq     BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id TEXT COLLATE "C" NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    data    TEXT    NOT NULL
);
CREATE INDEX observations_by_room ON observations (room_id, seq);

-- Framework events too large for a NOTIFY payload wait here until the other
-- processes have fetched them; rows older than an hour are swept.
CREATE TABLE fanout_outbox (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin     TEXT        NOT NULL,
    payload    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
