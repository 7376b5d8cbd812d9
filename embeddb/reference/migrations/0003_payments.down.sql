DROP TABLE invoices;
DROP TABLE ratings;
DROP TABLE transactions;
