/** Method ids the benchmark peers serve. */
export const ECHO_METHOD = 1;
