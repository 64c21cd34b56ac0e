from cortexcast.app.cli import main

raise SystemExit(main())
