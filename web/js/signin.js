// Operators' sign-in: name and ticket (`nerve credential operator NAME` on the router's machine). The page's one
// WAMP session joins again with ticket authentication and HELLO's authrole "operator"; signing out joins anonymously.
// The ticket is kept in memory only (a reload asks again), never in a cookie or storage.

const ROLE = "operator";

export class SignIn {
  constructor({ form, state, signOut, connection, onChange = () => {} }) {
    this.form = form;
    this.stateEl = state;
    this.signOutButton = signOut;
    this.connection = connection;
    this.onChange = onChange;
    this.pending = null; // authid while a sign-in waits for the router's answer
    this.refusal = "";
    form.addEventListener("submit", (event) => this._submit(event));
    signOut.addEventListener("click", () => this.signOut());
    connection.onRefused((reason) => {
      this.pending = null;
      this.refusal = reason;
      this.render();
    });
    connection.onStatus(() => this.render());
  }

  // Whether the page's session is an operator's (the router said so in WELCOME).
  get signedIn() {
    return this.connection.session !== null && this.connection.identity.authrole === ROLE;
  }

  _submit(event) {
    event.preventDefault();
    const authid = this.form.elements.authid.value.trim();
    const ticket = this.form.elements.ticket.value.trim();
    if (!authid || !ticket) {
      this.refusal = "enter your name and the ticket `nerve credential operator NAME` printed for it";
      this.render();
      return;
    }
    this.form.elements.ticket.value = "";
    this.pending = authid;
    this.refusal = "";
    this.connection.reconnectAs({ authid, ticket, authrole: ROLE });
    this.render();
  }

  signOut() {
    this.pending = null;
    this.refusal = "";
    this.connection.reconnectAs(null);
    this.render();
  }

  render() {
    const { identity, session } = this.connection;
    if (session && this.pending && identity.authid === this.pending) this.pending = null;
    const inside = this.signedIn;
    let text = "Watching anonymously: sign in as an operator to acknowledge and silence.";
    if (this.pending) text = `Signing in as ${this.pending}…`;
    else if (inside) text = `Signed in as ${identity.authid} (${identity.authrole}).`;
    else if (this.refusal) text = `Sign-in refused: ${this.refusal}`;
    this.stateEl.textContent = text;
    this.stateEl.dataset.state = this.pending ? "signing-in" : inside ? "signed-in" : this.refusal ? "refused" : "signed-out";
    for (const field of this.form.querySelectorAll("label, button[type=submit]")) field.hidden = inside;
    this.signOutButton.hidden = !inside;
    this.onChange(inside);
  }
}
