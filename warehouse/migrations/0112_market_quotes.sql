-- 0112: the quotes each cycle priced its book with (its validated ticks: quarantined ones are
-- in `quarantine`). The HTTP pre-trade gate prices an order from the newest cycle's quotes,
-- so an instrument no account holds can be traded too; analysts get the price history.
CREATE TABLE IF NOT EXISTS market_quotes (
    cycle_id    VARCHAR NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,    -- the quote's own time (the feed's)
    instrument  VARCHAR NOT NULL,        -- "EUR/USD"
    bid         DOUBLE,
    ask         DOUBLE,
    mid         DOUBLE NOT NULL          -- > 0 and finite (checked by the validate stage)
);
