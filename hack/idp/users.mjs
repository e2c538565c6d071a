// Test users for the local IdP, read from a JSON file on every lookup so a
// test can change a user's groups (or add and remove users) while the server
// runs, and see it at the next login or refresh.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

function digest(value) {
  return createHash('sha256').update(String(value), 'utf8').digest();
}

function checkUser(user, index, path) {
  const where = `${path}: users[${index}]`;
  if (user === null || typeof user !== 'object') throw new Error(`${where} must be an object`);
  for (const field of ['username', 'password', 'email']) {
    if (typeof user[field] !== 'string' || user[field] === '') {
      throw new Error(`${where}.${field} must be a non-empty string`);
    }
  }
  if (!Array.isArray(user.groups) || !user.groups.every((g) => typeof g === 'string')) {
    throw new Error(`${where}.groups must be a list of strings`);
  }
}

export class UserStore {
  #path;

  constructor(path) {
    this.#path = path;
    this.#load(); // fail at start-up, not at the first login, if the file is wrong
  }

  #load() {
    const data = JSON.parse(readFileSync(this.#path, 'utf8'));
    if (!Array.isArray(data?.users)) throw new Error(`${this.#path}: expected {"users": [...]}`);
    data.users.forEach((user, index) => checkUser(user, index, this.#path));
    return new Map(data.users.map((user) => [user.username, user]));
  }

  find(username) {
    if (typeof username !== 'string') return undefined;
    return this.#load().get(username);
  }

  // Compares digests in constant time, and always does the comparison, so a
  // wrong username costs the same as a wrong password.
  authenticate(username, password) {
    if (typeof password !== 'string') return undefined;
    const user = this.find(username);
    const expected = digest(user ? user.password : '\u0000no such user');
    const ok = timingSafeEqual(expected, digest(password));
    return user && ok ? user : undefined;
  }

  // The account model oidc-provider asks for (findAccount): claims are read
  // fresh each time, which is what makes group changes visible on refresh.
  account(username) {
    if (!this.find(username)) return undefined;
    return {
      accountId: username,
      claims: async () => {
        const user = this.find(username);
        if (!user) return { sub: username };
        return {
          sub: user.username,
          email: user.email,
          email_verified: true,
          groups: [...user.groups],
          preferred_username: user.username,
        };
      },
    };
  }
}
