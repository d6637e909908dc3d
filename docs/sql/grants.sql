-- What jobq_app may do in the jobq database. Run once, as jobq_owner (or the master user), in the
-- jobq database, before the promoter first migrates it:
--   psql "host=<endpoint> dbname=jobq user=jobq_owner sslmode=verify-full sslrootcert=certs/rds-global-bundle.pem" -f docs/sql/grants.sql
-- The default privileges cover every table and sequence jobq_owner creates, now and in later
-- migrations, so nothing has to be granted again after an upgrade.

REVOKE ALL ON DATABASE jobq FROM PUBLIC;

GRANT CONNECT ON DATABASE jobq TO jobq_app;

-- Postgres 15 already keeps CREATE on the public schema from PUBLIC; older versions did not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO jobq_app;

ALTER DEFAULT PRIVILEGES FOR ROLE jobq_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO jobq_app;

ALTER DEFAULT PRIVILEGES FOR ROLE jobq_owner IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO jobq_app;
