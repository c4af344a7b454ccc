/** A handlers module whose default export is no Handlers (a fixture). */
export default 42;
