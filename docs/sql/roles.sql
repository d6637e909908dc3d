-- jobq's database roles. Run once as the RDS master user (or any role with CREATEROLE and
-- CREATEDB), with psql, which sends each statement on its own:
--   psql "host=<endpoint> dbname=postgres user=<master> sslmode=verify-full sslrootcert=certs/rds-global-bundle.pem" -f docs/sql/roles.sql
-- then give both roles passwords (\password jobq_owner, \password jobq_app) and store each in its
-- own Secrets Manager secret (RDS JSON shape), and run grants.sql in the new database.
--
-- jobq_owner owns the database and its schema and runs the migrations (the promoter, at start).
-- jobq_app is what the functions and the workers use: it reads and writes rows, and can create,
-- alter or drop nothing.

CREATE ROLE jobq_owner LOGIN;

CREATE ROLE jobq_app LOGIN;

-- On RDS the master user is not a superuser: it has to be a member of a role to create a database
-- owned by it.
GRANT jobq_owner TO CURRENT_USER;

CREATE DATABASE jobq OWNER jobq_owner;
