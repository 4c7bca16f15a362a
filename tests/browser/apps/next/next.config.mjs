// next dev --turbopack behind the preview gateway. Environment:
//   DEV_ALLOWED_HOSTS  comma-separated allowedDevOrigins (default *.preview.localhost patterns)
// Port and address come from the command line (-p, -H).
const allowed = process.env.DEV_ALLOWED_HOSTS
  ? process.env.DEV_ALLOWED_HOSTS.split(",")
  : ["*.preview.localhost", "**.preview.localhost"];

export default {
  allowedDevOrigins: allowed,
  devIndicators: false,
};
