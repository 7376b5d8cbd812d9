DROP TABLE api_keys;
DROP TABLE sessions;
DROP TABLE user_profiles;
DROP TABLE users;
