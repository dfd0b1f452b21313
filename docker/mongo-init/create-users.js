// Runs once, on the first start of the mongo container (empty data volume), as the root user:
// one user per service database, allowed to read and write that database only.
const services = [
  ["auth-service", "infergate-auth", process.env.MONGO_AUTH_PASSWORD],
  ["usage-service", "infergate-usage", process.env.MONGO_USAGE_PASSWORD],
];
for (const [user, database, password] of services) {
  db.getSiblingDB(database).createUser({
    user: user,
    pwd: password,
    roles: [{ role: "readWrite", db: database }],
  });
}
