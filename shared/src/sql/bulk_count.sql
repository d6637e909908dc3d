-- bulk_count (a template, filled by Store::count_matching): how many jobs in one status match a
-- bulk operation's filter. The search is find.sql's, with no cursor.
-- $1 status, $2..$7 the other filters (see find.sql), $8, $9 NULL (no cursor)
SELECT count(*) AS n FROM (
{matching}
) AS matched
