DROP TABLE subscriptions;
DROP TABLE services;
