-- The SQL store of expertbot's release b7b89f5, with a few rows in every table
-- (scripts/make-db-fixtures.sh). Load it into an empty schema on the search_path.

--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;




SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: answer_messages; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE answer_messages (
    platform character varying(32) NOT NULL,
    conversation character varying(256) NOT NULL,
    message_id character varying(256) NOT NULL,
    answer_id character varying(36) NOT NULL,
    thread character varying(256),
    created_at timestamp without time zone NOT NULL
);


--
-- Name: answers; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE answers (
    id character varying(36) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    question text NOT NULL,
    asker character varying(256) NOT NULL,
    platform character varying(32) NOT NULL,
    where_kind character varying(32) NOT NULL,
    channel character varying(256),
    thread character varying(256),
    retrieved text NOT NULL,
    answer text NOT NULL,
    sources text NOT NULL,
    abstained boolean NOT NULL,
    curated_id character varying(36),
    model character varying(256) NOT NULL,
    adapter character varying(64),
    retrieval_s double precision,
    generation_s double precision,
    total_s double precision
);


--
-- Name: corrections; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE corrections (
    id character varying(36) NOT NULL,
    answer_id character varying(36) NOT NULL,
    user_id character varying(256) NOT NULL,
    platform character varying(32) NOT NULL,
    text text NOT NULL,
    approved boolean NOT NULL,
    curated_id character varying(36),
    created_at timestamp without time zone NOT NULL
);


--
-- Name: curated_answers; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE curated_answers (
    id character varying(36) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    question text NOT NULL,
    embedding bytea NOT NULL,
    answer text NOT NULL,
    sources text NOT NULL,
    approved_by character varying(256) NOT NULL,
    kind character varying(16) NOT NULL,
    answer_id character varying(36),
    active boolean NOT NULL,
    guards text
);


--
-- Name: job_locks; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE job_locks (
    name character varying(128) NOT NULL,
    holder character varying(256) NOT NULL,
    acquired_at timestamp without time zone NOT NULL,
    expires_at timestamp without time zone NOT NULL
);


--
-- Name: job_runs; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE job_runs (
    id integer NOT NULL,
    job character varying(32) NOT NULL,
    trigger character varying(256) NOT NULL,
    started_at timestamp without time zone NOT NULL,
    finished_at timestamp without time zone,
    outcome character varying(16) NOT NULL,
    summary text NOT NULL
);


--
-- Name: job_runs_id_seq; Type: SEQUENCE; Schema: -; Owner: -
--

CREATE SEQUENCE job_runs_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: job_runs_id_seq; Type: SEQUENCE OWNED BY; Schema: -; Owner: -
--

ALTER SEQUENCE job_runs_id_seq OWNED BY job_runs.id;


--
-- Name: processed_events; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE processed_events (
    platform character varying(32) NOT NULL,
    event_id character varying(256) NOT NULL,
    received_at timestamp without time zone NOT NULL
);


--
-- Name: ratings; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE ratings (
    id integer NOT NULL,
    answer_id character varying(36) NOT NULL,
    user_id character varying(256) NOT NULL,
    platform character varying(32) NOT NULL,
    kind character varying(16) NOT NULL,
    source character varying(32) NOT NULL,
    expert boolean NOT NULL,
    comment text,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    retracted_at timestamp without time zone
);


--
-- Name: ratings_id_seq; Type: SEQUENCE; Schema: -; Owner: -
--

CREATE SEQUENCE ratings_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ratings_id_seq; Type: SEQUENCE OWNED BY; Schema: -; Owner: -
--

ALTER SEQUENCE ratings_id_seq OWNED BY ratings.id;


--
-- Name: scheduled_jobs; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE scheduled_jobs (
    id character varying(191) NOT NULL,
    next_run_time double precision,
    job_state bytea NOT NULL
);


--
-- Name: schema_migrations; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE schema_migrations (
    namespace character varying(64) NOT NULL,
    name character varying(128) NOT NULL,
    applied_at timestamp without time zone NOT NULL
);


--
-- Name: sync_items; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE sync_items (
    id integer NOT NULL,
    run_id integer NOT NULL,
    source character varying(256) NOT NULL,
    doc_id text NOT NULL,
    action character varying(16) NOT NULL,
    reason text
);


--
-- Name: sync_items_id_seq; Type: SEQUENCE; Schema: -; Owner: -
--

CREATE SEQUENCE sync_items_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: sync_items_id_seq; Type: SEQUENCE OWNED BY; Schema: -; Owner: -
--

ALTER SEQUENCE sync_items_id_seq OWNED BY sync_items.id;


--
-- Name: sync_runs; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE sync_runs (
    id integer NOT NULL,
    started_at timestamp without time zone NOT NULL,
    finished_at timestamp without time zone,
    status character varying(16) NOT NULL,
    trigger character varying(64) NOT NULL,
    holder character varying(256) NOT NULL,
    store character varying(32) NOT NULL,
    sources text NOT NULL,
    added integer NOT NULL,
    updated integer NOT NULL,
    deleted integer NOT NULL,
    unchanged integer NOT NULL,
    skipped integer NOT NULL,
    failed integer NOT NULL,
    chunks_written integer NOT NULL,
    chunks_embedded integer NOT NULL,
    duration_s double precision,
    error text
);


--
-- Name: sync_runs_id_seq; Type: SEQUENCE; Schema: -; Owner: -
--

CREATE SEQUENCE sync_runs_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: sync_runs_id_seq; Type: SEQUENCE OWNED BY; Schema: -; Owner: -
--

ALTER SEQUENCE sync_runs_id_seq OWNED BY sync_runs.id;


--
-- Name: teams_conversations; Type: TABLE; Schema: -; Owner: -
--

CREATE TABLE teams_conversations (
    conversation character varying(512) NOT NULL,
    reference text NOT NULL,
    updated_at timestamp without time zone NOT NULL
);


--
-- Name: job_runs id; Type: DEFAULT; Schema: -; Owner: -
--

ALTER TABLE ONLY job_runs ALTER COLUMN id SET DEFAULT nextval('job_runs_id_seq'::regclass);


--
-- Name: ratings id; Type: DEFAULT; Schema: -; Owner: -
--

ALTER TABLE ONLY ratings ALTER COLUMN id SET DEFAULT nextval('ratings_id_seq'::regclass);


--
-- Name: sync_items id; Type: DEFAULT; Schema: -; Owner: -
--

ALTER TABLE ONLY sync_items ALTER COLUMN id SET DEFAULT nextval('sync_items_id_seq'::regclass);


--
-- Name: sync_runs id; Type: DEFAULT; Schema: -; Owner: -
--

ALTER TABLE ONLY sync_runs ALTER COLUMN id SET DEFAULT nextval('sync_runs_id_seq'::regclass);


--
-- Data for Name: answer_messages; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO answer_messages VALUES ('slack', 'D100', '1700000000.000200', 'a-0001', '1700000000.000100', '2026-11-30 04:37:14.746425');
INSERT INTO answer_messages VALUES ('teams', '19:general@thread.tacv2', '1700000001', 'a-0003', NULL, '2026-11-30 04:37:14.751787');


--
-- Data for Name: answers; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO answers VALUES ('a-0001', '2026-11-30 04:37:14.732501', 'How do I reset my password?', 'U100', 'slack', 'dm', 'D100', '1700000000.000100', '[{"chunk_id": "c1", "doc": "it/passwords.md", "title": "Passwords", "score": 0.9}, {"chunk_id": "c2", "doc": "hr/salaries.md", "title": "Salaries", "score": 0.4, "access": "private"}]', 'Open the self-service portal [1].', '[{"number": 1, "title": "Passwords", "uri": "file:///srv/handbook/it/passwords.md", "heading": "Reset"}]', false, NULL, 'microsoft/Phi-3-mini-4k-instruct', 'v0001', 0.05, 1.2, 1.3);
INSERT INTO answers VALUES ('a-0002', '2026-11-30 04:37:14.737548', 'What is the salary band of a senior engineer?', 'U100', 'slack', 'dm', 'D100', '1700000000.000100', '[{"chunk_id": "c1", "doc": "it/passwords.md", "title": "Passwords", "score": 0.9}, {"chunk_id": "c2", "doc": "hr/salaries.md", "title": "Salaries", "score": 0.4, "access": "private"}]', 'Open the self-service portal [1].', '[{"number": 1, "title": "Passwords", "uri": "file:///srv/handbook/it/passwords.md", "heading": "Reset"}]', false, NULL, 'microsoft/Phi-3-mini-4k-instruct', 'v0001', 0.05, 1.2, 1.3);
INSERT INTO answers VALUES ('a-0003', '2026-11-30 04:37:14.74094', 'Who won the match?', '29:teams-user', 'teams', 'public', '19:general@thread.tacv2', NULL, '[]', 'I don''t know.', '[]', true, NULL, 'microsoft/Phi-3-mini-4k-instruct', NULL, NULL, NULL, NULL);


--
-- Data for Name: corrections; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO corrections VALUES ('835009c7-1459-4d3a-b0fc-5ec77a6c323d', 'a-0002', 'UEXPERT', 'slack', 'See the 2025 salary grid.', true, NULL, '2026-11-30 04:37:14.775811');
INSERT INTO corrections VALUES ('bf4ac688-2a74-4a88-89cf-b19232db5ac4', 'a-0003', '29:teams-user', 'teams', 'It was a draw.', false, NULL, '2026-11-30 04:37:14.7798');


--
-- Data for Name: curated_answers; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO curated_answers VALUES ('4ecd987b-17f4-47d8-a43a-064f95bd876c', '2026-11-30 04:37:14.786241', 'How do I reset my password?', '\x7c410abf1f82c5be8c026dbeb3019ebdb3019e3d8c026d3e1f82c53e7c410a3f', 'Open the self-service portal [1].', '[{"title": "Passwords", "uri": "file:///srv/handbook/it/passwords.md", "heading": "Reset", "access": "public", "allowed": []}]', 'UEXPERT', 'approved', 'a-0001', true, '[{"title": "", "uri": "", "heading": "", "access": "private", "allowed": []}]');
INSERT INTO curated_answers VALUES ('aab65558-9672-4ed7-83e4-8229d7ecfe33', '2026-11-30 04:37:14.795673', 'Where is the VPN guide?', '\xf304b53ef304b53ef304b53ef304b53ef304b53ef304b53ef304b53ef304b53e', 'In the IT handbook.', '[{"title": "VPN", "uri": "file:///srv/handbook/it/vpn.md", "heading": "", "access": "restricted", "allowed": ["finance"]}]', 'import', 'imported', NULL, true, '[]');
INSERT INTO curated_answers VALUES ('2dfebeaa-e5f7-408b-8806-29905c51c40c', '2026-11-30 04:37:14.792865', 'What is the salary band of a senior engineer?', '\x7c410a3f1f82c53e8c026d3eb3019e3db3019ebd8c026dbe1f82c5be7c410abf', 'See the 2025 salary grid.', '[{"title": "Passwords", "uri": "file:///srv/handbook/it/passwords.md", "heading": "Reset", "access": "public", "allowed": []}]', 'UEXPERT', 'corrected', 'a-0002', false, '[{"title": "", "uri": "", "heading": "", "access": "private", "allowed": []}]');


--
-- Data for Name: job_locks; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO job_locks VALUES ('knowledge.sync', 'release-host:4242:fixture', '2026-11-30 04:37:14.70415', '2026-11-30 05:37:14.70415');


--
-- Data for Name: job_runs; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO job_runs VALUES (1, 'sync', 'cli', '2026-11-30 04:37:14.809044', '2026-11-30 04:37:14.812305', 'ok', 'sync ok: 1 added, 1 updated');
INSERT INTO job_runs VALUES (2, 'retrain', 'slack:UADMIN', '2026-11-30 04:37:14.814179', NULL, 'running', '');


--
-- Data for Name: processed_events; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO processed_events VALUES ('slack', 'Ev0001', '2026-11-30 04:37:14.800776');
INSERT INTO processed_events VALUES ('schedule', 'train@2025-01-01T02:00:00+00:00', '2026-11-30 04:37:14.807792');


--
-- Data for Name: ratings; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO ratings VALUES (1, 'a-0001', 'U100', 'slack', 'up', 'reaction', false, NULL, '2026-11-30 04:37:14.752871', '2026-11-30 04:37:14.752871', NULL);
INSERT INTO ratings VALUES (2, 'a-0001', 'UEXPERT', 'slack', 'approved', 'button', true, NULL, '2026-11-30 04:37:14.76189', '2026-11-30 04:37:14.76189', NULL);
INSERT INTO ratings VALUES (3, 'a-0002', 'U200', 'slack', 'down', 'feedback', false, 'out of date', '2026-11-30 04:37:14.766218', '2026-11-30 04:37:14.772814', '2026-11-30 04:37:14.772796');


--
-- Data for Name: scheduled_jobs; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO scheduled_jobs VALUES ('expertbot.train', 1796090400, '\x800595eb030000000000007d94288c0776657273696f6e944b018c026964948c0f657870657274626f742e747261696e948c0466756e63948c1a626f742e7363686564756c653a72756e5f7363686564756c6564948c0774726967676572948c1961707363686564756c65722e74726967676572732e63726f6e948c0b43726f6e547269676765729493942981947d942868014b028c0874696d657a6f6e65948c086461746574696d65948c0874696d657a6f6e65949394680d8c0974696d6564656c74619493944b004b004b0087945294859452948c0a73746172745f64617465944e8c08656e645f64617465944e8c066669656c6473945d94288c2061707363686564756c65722e74726967676572732e63726f6e2e6669656c6473948c09426173654669656c649493942981947d94288c046e616d65948c0479656172948c0a69735f64656661756c7494888c0b65787072657373696f6e73945d948c2561707363686564756c65722e74726967676572732e63726f6e2e65787072657373696f6e73948c0d416c6c45787072657373696f6e9493942981947d948c0473746570944e7362617562681a8c0a4d6f6e74684669656c649493942981947d9428681f8c056d6f6e74689468218968225d9468262981947d9468294e7362617562681a8c0f4461794f664d6f6e74684669656c649493942981947d9428681f8c036461799468218968225d9468262981947d9468294e7362617562681a8c095765656b4669656c649493942981947d9428681f8c047765656b9468218868225d9468262981947d9468294e7362617562681a8c0e4461794f665765656b4669656c649493942981947d9428681f8c0b6461795f6f665f7765656b9468218968225d9468262981947d9468294e7362617562681c2981947d9428681f8c04686f75729468218968225d9468248c0f52616e676545787072657373696f6e9493942981947d942868294e8c056669727374944b028c046c617374944b027562617562681c2981947d9428681f8c066d696e7574659468218968225d94684f2981947d942868294e68524b0068534b007562617562681c2981947d9428681f8c067365636f6e649468218868225d94684f2981947d942868294e68524b0068534b007562617562658c066a6974746572944e75628c086578656375746f72948c0764656661756c74948c046172677394298c066b7761726773947d948c036a6f62948c05747261696e9473681f68678c126d6973666972655f67726163655f74696d65944b018c08636f616c6573636594888c0d6d61785f696e7374616e636573944b018c0d6e6578745f72756e5f74696d6594680d8c086461746574696d65949394430a07ea0c0102000000000094681586945294752e');


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO schema_migrations VALUES ('knowledge', 'm001_initial', '2026-11-30 04:37:14.568812');
INSERT INTO schema_migrations VALUES ('training', 'm001_answers_and_curated', '2026-11-30 04:37:14.591239');
INSERT INTO schema_migrations VALUES ('training', 'm002_feedback', '2026-11-30 04:37:14.63608');
INSERT INTO schema_migrations VALUES ('bot', 'm001_processed_events', '2026-11-30 04:37:14.663872');
INSERT INTO schema_migrations VALUES ('jobs', 'm001_job_runs', '2026-11-30 04:37:14.677189');
INSERT INTO schema_migrations VALUES ('teams', 'm001_teams_conversations', '2026-11-30 04:37:14.68699');
INSERT INTO schema_migrations VALUES ('schedule', 'm001_scheduled_jobs', '2026-11-30 04:37:14.702909');


--
-- Data for Name: sync_items; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO sync_items VALUES (1, 1, 'handbook', 'it/passwords.md', 'added', NULL);
INSERT INTO sync_items VALUES (2, 1, 'handbook', 'hr/leave.md', 'updated', NULL);
INSERT INTO sync_items VALUES (3, 1, 'handbook', 'old/vpn.md', 'deleted', NULL);
INSERT INTO sync_items VALUES (4, 1, 'handbook', 'scan.pdf', 'skipped', 'no text in the file');
INSERT INTO sync_items VALUES (5, 1, 'handbook', 'broken.docx', 'failed', 'not a zip file');


--
-- Data for Name: sync_runs; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO sync_runs VALUES (1, '2026-11-30 04:37:14.710191', '2026-11-30 04:37:14.714589', 'ok', 'cli', 'release-host:4242:fixture', 'lancedb', '[{"name": "handbook", "path": "/srv/handbook"}]', 1, 1, 1, 1, 1, 1, 12, 9, 1.5, NULL);
INSERT INTO sync_runs VALUES (2, '2026-11-30 04:37:14.724689', '2026-11-30 04:37:14.728579', 'interrupted', 'schedule@2025-01-01T03:00:00+00:00', 'gone-host:1:x', 'lancedb', '[]', 0, 0, 0, 0, 0, 0, 0, 0, NULL, 'the process stopped mid-sync');


--
-- Data for Name: teams_conversations; Type: TABLE DATA; Schema: -; Owner: -
--

INSERT INTO teams_conversations VALUES ('19:admin@thread.tacv2', '{"activityId":"f:1","user":{"id":"29:admin","name":"Admin"},"bot":{"id":"28:bot","name":"expertbot"},"conversation":{"conversationType":"channel","id":"19:admin@thread.tacv2"},"channelId":"msteams","serviceUrl":"https://smba.trafficmanager.net/emea/"}', '2026-11-30 04:37:14.819193');


--
-- Name: job_runs_id_seq; Type: SEQUENCE SET; Schema: -; Owner: -
--

SELECT pg_catalog.setval('job_runs_id_seq', 2, true);


--
-- Name: ratings_id_seq; Type: SEQUENCE SET; Schema: -; Owner: -
--

SELECT pg_catalog.setval('ratings_id_seq', 3, true);


--
-- Name: sync_items_id_seq; Type: SEQUENCE SET; Schema: -; Owner: -
--

SELECT pg_catalog.setval('sync_items_id_seq', 5, true);


--
-- Name: sync_runs_id_seq; Type: SEQUENCE SET; Schema: -; Owner: -
--

SELECT pg_catalog.setval('sync_runs_id_seq', 2, true);


--
-- Name: answer_messages answer_messages_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY answer_messages
    ADD CONSTRAINT answer_messages_pkey PRIMARY KEY (platform, conversation, message_id);


--
-- Name: answers answers_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY answers
    ADD CONSTRAINT answers_pkey PRIMARY KEY (id);


--
-- Name: corrections corrections_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY corrections
    ADD CONSTRAINT corrections_pkey PRIMARY KEY (id);


--
-- Name: curated_answers curated_answers_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY curated_answers
    ADD CONSTRAINT curated_answers_pkey PRIMARY KEY (id);


--
-- Name: job_locks job_locks_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY job_locks
    ADD CONSTRAINT job_locks_pkey PRIMARY KEY (name);


--
-- Name: job_runs job_runs_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY job_runs
    ADD CONSTRAINT job_runs_pkey PRIMARY KEY (id);


--
-- Name: processed_events processed_events_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY processed_events
    ADD CONSTRAINT processed_events_pkey PRIMARY KEY (platform, event_id);


--
-- Name: ratings ratings_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY ratings
    ADD CONSTRAINT ratings_pkey PRIMARY KEY (id);


--
-- Name: scheduled_jobs scheduled_jobs_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY scheduled_jobs
    ADD CONSTRAINT scheduled_jobs_pkey PRIMARY KEY (id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (namespace, name);


--
-- Name: sync_items sync_items_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY sync_items
    ADD CONSTRAINT sync_items_pkey PRIMARY KEY (id);


--
-- Name: sync_runs sync_runs_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY sync_runs
    ADD CONSTRAINT sync_runs_pkey PRIMARY KEY (id);


--
-- Name: teams_conversations teams_conversations_pkey; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY teams_conversations
    ADD CONSTRAINT teams_conversations_pkey PRIMARY KEY (conversation);


--
-- Name: ratings uq_ratings_answer_user_kind; Type: CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY ratings
    ADD CONSTRAINT uq_ratings_answer_user_kind UNIQUE (answer_id, user_id, kind);


--
-- Name: ix_answer_messages_answer; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_answer_messages_answer ON answer_messages USING btree (answer_id);


--
-- Name: ix_answer_messages_thread; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_answer_messages_thread ON answer_messages USING btree (platform, conversation, thread);


--
-- Name: ix_answers_created; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_answers_created ON answers USING btree (created_at);


--
-- Name: ix_corrections_answer; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_corrections_answer ON corrections USING btree (answer_id);


--
-- Name: ix_curated_active; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_curated_active ON curated_answers USING btree (active);


--
-- Name: ix_job_runs_started; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_job_runs_started ON job_runs USING btree (started_at);


--
-- Name: ix_processed_events_received; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_processed_events_received ON processed_events USING btree (received_at);


--
-- Name: ix_ratings_kind; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_ratings_kind ON ratings USING btree (kind);


--
-- Name: ix_scheduled_jobs_next_run_time; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_scheduled_jobs_next_run_time ON scheduled_jobs USING btree (next_run_time);


--
-- Name: ix_sync_items_run; Type: INDEX; Schema: -; Owner: -
--

CREATE INDEX ix_sync_items_run ON sync_items USING btree (run_id);


--
-- Name: sync_items sync_items_run_id_fkey; Type: FK CONSTRAINT; Schema: -; Owner: -
--

ALTER TABLE ONLY sync_items
    ADD CONSTRAINT sync_items_run_id_fkey FOREIGN KEY (run_id) REFERENCES sync_runs(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--


