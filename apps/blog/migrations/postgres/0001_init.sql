-- Users, entries and comments. Timestamps are RFC 3339 UTC text (`2024-05-01T12:00:00.000Z`),
-- the one representation both dialects carry through sqlx's Any driver. Keep this file and
-- ../sqlite/0001_init.sql the same schema.

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    first_name    TEXT   NOT NULL,
    last_name     TEXT   NOT NULL,
    created_at    TEXT   NOT NULL
);

CREATE TABLE entries (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title      TEXT   NOT NULL,
    content    TEXT   NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at TEXT   NOT NULL,
    updated_at TEXT   NOT NULL
);

CREATE INDEX entries_user_id ON entries (user_id);

CREATE TABLE comments (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body       TEXT   NOT NULL,
    entry_id   BIGINT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at TEXT   NOT NULL,
    updated_at TEXT   NOT NULL
);

CREATE INDEX comments_entry_id ON comments (entry_id);
CREATE INDEX comments_user_id ON comments (user_id);
