export const message = "v1";
